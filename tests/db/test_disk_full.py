"""A full disk during a database write: one DiskFullError naming the database, nothing
half-written, and the database usable again once there is room (a real tmpfs, filled for real)."""

from __future__ import annotations

import pytest

import db
from core.lab import Lab
from tests.helpers import Tmpfs


@pytest.mark.parametrize("what", ["transaction", "writer"])
def test_a_full_disk_during_a_database_write_is_one_error_and_the_database_survives(tmp_path, what):
    from core.errors import DiskFullError
    from db.writer import BufferedWriter

    with Tmpfs(tmp_path / "disk", "2m") as disk:
        lab = Lab.at(disk.where / "lab")
        db.ensure_schema(lab)
        with db.transaction(lab) as con:
            con.execute("INSERT INTO step_metrics VALUES ('r', 1, 10, 'loss', 0.5, now()::TIMESTAMP)")
        filler = disk.where / "filler"
        with open(filler, "wb") as f:  # fill what is left
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        rows = [["r", s, s * 10, "loss", 0.1, db.utcnow()] for s in range(2, 20000)]
        with pytest.raises(DiskFullError) as err:
            if what == "transaction":
                with db.transaction(lab) as con:
                    con.execute("INSERT INTO step_metrics SELECT 'r', i, i * 10, 'loss', 0.1, now()::TIMESTAMP FROM range(2, "
                                "20000) t(i)")
            else:
                w = BufferedWriter(lab, lab.run_dir("r"))
                w.insert_many("step_metrics", ["run_id", "step", "tokens", "name", "value", "logged_at"], rows)
                try:
                    w.flush()
                finally:
                    w.owner.release()
        assert str(lab.db) in str(err.value) and "\n" not in str(err.value)
        assert err.value.__suppress_context__  # one error, not three chained tracebacks
        filler.unlink()
        assert db.query_rows(lab, "SELECT count(*) FROM step_metrics")[0][0] == 1  # nothing half-written
        with db.transaction(lab) as con:
            con.execute("INSERT INTO step_metrics VALUES ('r', 2, 20, 'loss', 0.4, now()::TIMESTAMP)")
        assert db.query_rows(lab, "SELECT count(*) FROM step_metrics")[0][0] == 2
