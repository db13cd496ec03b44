"""Running an import in the background (the app's "Import" button), as the CLI would run it.

Why a process and not a call: an import evaluates and analyses the SAE (seconds to minutes, with
the model loaded), and the app's script must stay responsive and never hold that work — the same
rule as sweeps, whose jobs run in worker processes. The import is ``python -m engine import`` in its
own session, its output in ``lab/logs/``; ``result`` reads how it ended from that output.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from core.lab import Lab

REPO = Path(__file__).resolve().parents[2]
_RUN = re.compile(r"(?:as run|are run) (\S+?)[:;]")


@dataclass
class ImportJob:
    proc: subprocess.Popen
    log: Path
    what: str  # the path, as typed


@dataclass
class ImportResult:
    done: bool
    ok: bool = False
    run_id: str | None = None
    message: str = ""


def start_import(lab: Lab, path: str, hook: str | None = None, layer: int | None = None,
                 model: str | None = None) -> ImportJob:
    logs = lab.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"import-{time.strftime('%Y%m%d-%H%M%S')}-{len(list(logs.glob('import-*.log')))}.log"
    cmd = [sys.executable, "-m", "engine", "--lab", str(lab.root.resolve()), "-q", "import", path]
    if hook:
        cmd += ["--hook", hook]
    if layer is not None:
        cmd += ["--layer", str(layer)]
    if model:
        cmd += ["--model", model]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return ImportJob(proc, log, path)


def result(job: ImportJob) -> ImportResult:
    """How the import ended (``done`` False while it runs): the run it made or found, or its one-line error."""
    if job.proc.poll() is None:
        return ImportResult(False)
    try:
        lines = [x.strip() for x in job.log.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
    except OSError:
        lines = []
    errors = [x for x in lines if x.startswith("error:")]
    if job.proc.returncode != 0 or errors:
        return ImportResult(True, False, None, errors[-1][len("error:"):].strip() if errors else
                            f"the import stopped (exit code {job.proc.returncode}); see {job.log}")
    for line in lines:
        m = _RUN.search(line)
        if m and line.startswith(("imported", "already imported")):
            return ImportResult(True, True, m.group(1), line)
    return ImportResult(True, False, None, f"the import ended without naming its run; see {job.log}")
