"""Connecting a driver to Ray: a cluster at an address, or a Ray runtime of its own on this machine.

``ray`` is imported by the ray backend only (``engine.sweeps.ray_*``), and those modules only when
the backend is chosen: ``python -m engine``'s other commands and the app start without Ray and
without a cluster.

Without an address the driver starts a private runtime (``address="local"``: never a cluster some
``ray start`` left on this machine): as many CPUs as the machine has, no dashboard, no usage
statistics (Ray's own default for a local runtime: token authentication, its token in
``~/.ray/auth_token``), and its logs in a short temporary folder
(``$TMPDIR/sae-lab-ray/<lab>``: Ray's socket paths must stay under ~100 characters, which a lab
deep in a home folder would break). The runtime's processes are the driver's children and stop
with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from core.errors import LabError, first_line
from core.lab import Lab

NAMESPACE = "sae-lab"
INSTALL_HINT = "install it with pip install ray==2.60.0 (requirements.txt pins it; make install does it)"


def import_ray() -> Any:
    """The ``ray`` module, or one line saying how to install it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from this machine, ever
    try:
        import ray  # deferred: only the ray backend needs Ray, and importing it takes a second
    except ImportError:
        raise LabError(f"the ray backend needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def lab_key(lab: Lab) -> str:
    """A short name for a lab on this host: its node-local folders on every node carry it."""
    return hashlib.sha256(f"{socket.gethostname()}:{lab.root.resolve()}".encode()).hexdigest()[:12]


def node_folder(key: str) -> Path:
    """This node's folder for a lab's tasks (scratch labs, activation cache) and a local runtime's logs."""
    return Path(tempfile.gettempdir()) / "sae-lab-ray" / key


@dataclass(frozen=True)
class Runtime:
    address: str | None  # None: a runtime of the driver's own on this machine
    log_dir: Path | None

    def describe(self) -> str:
        if self.address:
            return f"the Ray cluster at {self.address}"
        return f"a Ray runtime on this machine (logs in {self.log_dir})"


def start_runtime(lab: Lab, address: str | None, num_cpus: int | None = None) -> Runtime:
    """``ray.init`` for the driver: connect to ``address``, or start a private local runtime."""
    ray = import_ray()
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, namespace=NAMESPACE, logging_level="WARNING", log_to_driver=True)
        except Exception as e:  # ConnectionError, an auth error, a timeout: all say the cluster is not there for us
            raise LabError(f"cannot connect to the Ray cluster at {address} ({first_line(e)}): start one with "
                           "`ray start --head` (see the README), check the address and its token, or leave out --address "
                           "for a Ray runtime on this machine") from None
        return Runtime(address, None)
    os.environ.pop("RAY_ADDRESS", None)  # "local" below: never attach to some other cluster by accident
    log_dir = node_folder(lab_key(lab)) / "runtime"
    log_dir.mkdir(parents=True, exist_ok=True)
    prune_sessions(log_dir)
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, _temp_dir=str(log_dir),
             namespace=NAMESPACE, logging_level="WARNING", log_to_driver=True)
    return Runtime(None, log_dir)


def prune_sessions(log_dir: Path) -> list[str]:
    """Remove the log folders of earlier local runtimes (``session_<date>_<time>_<driver pid>``)
    whose driver is gone: Ray keeps every session's logs, and a lab starts one per sweep."""
    removed = []
    for d in log_dir.glob("session_*"):
        pid = d.name.rsplit("_", 1)[-1]
        if d.is_dir() and not d.is_symlink() and pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    return removed


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Refuse at once an address nothing listens on (``ray.init`` keeps retrying it for minutes)."""
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        if address == "auto":
            return  # Ray finds the cluster a `ray start` on this machine recorded
        raise LabError(f"--address '{address}' is not host:port: give the address `ray start --head` printed, e.g. "
                       "192.168.1.10:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise LabError(f"nothing answers at the Ray address {address} ({first_line(e)}): start the cluster's head there "
                       "with `ray start --head` (see the README), check the address, or leave out --address for a Ray "
                       "runtime on this machine") from None


# -- the address a lab's driver used, so `ray-driver` re-attaches to the same place --------------------
def settings_file(lab: Lab) -> Path:
    return lab.root / "logs" / "ray-driver.json"


def remember_address(lab: Lab, address: str | None) -> None:
    path = settings_file(lab)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"address": address}))
    os.replace(tmp, path)


def last_address(lab: Lab) -> str | None:
    try:
        return json.loads(settings_file(lab).read_text()).get("address") or None
    except (OSError, ValueError, AttributeError):
        return None


# -- what a SIGKILLed driver leaves behind ------------------------------------------------------------
def reap_runtime_of(pid: int) -> list[int]:
    """Stop what is left of the local runtime of a driver that died (``pid``, on this host).

    A driver killed with SIGKILL cannot stop its runtime; Ray's own processes notice within a minute,
    some (its agents) linger longer. They are in the dead driver's process group (the app and the
    CLI start drivers as group leaders). A group can only exist while a member lives, and no new
    process can take the id of a live group, so while no process ``pid`` exists every member of group
    ``pid`` descends from that driver. Only processes that look like Ray's are stopped."""
    if psutil.pid_exists(pid):
        return []  # a process has the id again (not the dead driver): its group is not ours to touch
    killed = []
    for p in psutil.process_iter(["pid", "cmdline", "name"]):
        try:
            if os.getpgid(p.pid) != pid:
                continue
            text = " ".join(p.info["cmdline"] or []) + " " + (p.info["name"] or "")
            if "ray" in text:
                os.kill(p.pid, signal.SIGKILL)
                killed.append(p.pid)
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return killed
