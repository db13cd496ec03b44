"""The real server, started the way `make lab` starts it, listens on loopback only.

The command line is read from `make -n lab` (the Makefile's own recipe, which runs lab_app.serve),
started on a free port, and the kernel's table of listening sockets is read with psutil: the port
must be bound to the loopback address alone, never 0.0.0.0 or ::. Waits are bounded but generous
(a loaded 2-core machine can take tens of seconds to import Streamlit).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import REPO

START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_lab_command(lab: Path, port: int, *make_vars: str) -> list[str]:
    """The app-starting line of `make lab`, with this test's interpreter, lab and port."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed (make test needs it)")
    out = subprocess.run(["make", "-n", "lab", f"LAB={lab}", f"PORT={port}", f"BIN={Path(sys.executable).parent}", *make_vars],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout
    lines = [ln for ln in out.splitlines() if "-m lab_app.serve" in ln]
    assert any(ln.endswith("--check") for ln in lines), out  # the address is checked before the experiment runs
    serve = [ln for ln in lines if not ln.endswith("--check")]
    assert len(serve) == 1, out
    return shlex.split(serve[0])


def listening(port: int) -> set[str]:
    """Addresses with a listening TCP socket on this port, from the kernel's table (every process)."""
    return {c.laddr.ip for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def owned_by(pid: int, port: int) -> bool:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for p in procs for c in p.net_connections(kind="inet"))


def serve_and_read_sockets(cmd: list[str], port: int, log: Path, env: dict[str, str]) -> set[str]:
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not listening(port):
            assert proc.poll() is None, f"the app exited ({proc.returncode}): {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, (f"nothing listened on {port} within {START_TIMEOUT:.0f}s: "
                                                 f"{log.read_text()[-2000:]}")
            time.sleep(0.5)
        time.sleep(1.0)  # a second (e.g. IPv6) socket would come right after the first
        assert owned_by(proc.pid, port), "the listening socket is not the app's"
        return listening(port)
    finally:
        children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


def app_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_") and k != "SAE_LAB_TOKEN"}
    return {**env, "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}  # no ~/.streamlit/config.toml of the user's


def test_make_lab_listens_on_loopback_only(tmp_path):
    port = free_port()
    cmd = make_lab_command(tmp_path / "lab", port)
    assert cmd[cmd.index("--address") + 1] == "127.0.0.1"
    assert serve_and_read_sockets(cmd, port, tmp_path / "app.log", app_env(tmp_path)) == {"127.0.0.1"}


def test_make_lab_address_reaches_the_server(tmp_path):
    """ADDRESS=... is what the server binds (127.0.0.2: another loopback address, so nothing is exposed)."""
    port = free_port()
    cmd = make_lab_command(tmp_path / "lab", port, "ADDRESS=127.0.0.2")
    assert serve_and_read_sockets(cmd, port, tmp_path / "app.log", app_env(tmp_path)) == {"127.0.0.2"}


def test_plain_streamlit_run_from_the_repo_reads_the_local_only_config(tmp_path):
    """`streamlit run lab_app/app.py` with no address: .streamlit/config.toml keeps it on 127.0.0.1."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "lab_app/app.py", "--server.port", str(port)]
    env = {**app_env(tmp_path), "SAE_LAB_DIR": str(tmp_path / "lab")}
    assert serve_and_read_sockets(cmd, port, tmp_path / "app.log", env) == {"127.0.0.1"}
