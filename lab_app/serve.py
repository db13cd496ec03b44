"""Start the lab app: ``python -m lab_app.serve [--lab DIR] [--port 8501] [--address 127.0.0.1]``.

The one command line ``make lab`` runs (and the tests run), so the address it binds is decided in
one place. It listens on 127.0.0.1 unless told otherwise; any other address is refused unless
``SAE_LAB_TOKEN`` holds a good token (lab_app/access.py checks it in the app). Refusing, rather
than inventing a token, keeps the token in the hands of whoever exposes the lab.

Streamlit reads .streamlit/config.toml from the directory it starts in, so this starts it from the
repository root, whatever directory ``make`` or the user was in. It replaces itself with Streamlit
(``os.execve``): Ctrl-C and signals reach the server directly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.errors import LabError
from lab_app.access import check_exposure, configured_token, is_loopback

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "lab_app" / "app.py"
DEFAULT_ADDRESS = "127.0.0.1"


def streamlit_argv(address: str, port: int) -> list[str]:
    """The server's command line; the rest of its settings live in .streamlit/config.toml."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", address, "--server.port", str(port)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab_app.serve", description="Start the lab app (what `make lab` runs).")
    p.add_argument("--lab", default=os.environ.get("SAE_LAB_DIR") or "lab_data", help="the lab folder (default ./lab_data)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default=DEFAULT_ADDRESS,
                   help="listen address (default 127.0.0.1; anything else needs SAE_LAB_TOKEN)")
    p.add_argument("--check", action="store_true", help="only check the address and token, then exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if not 0 < args.port < 65536:
            raise LabError(f"--port {args.port} is not a TCP port: use 1-65535, e.g. make lab PORT=8501")
        check_exposure(args.address, configured_token())
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if args.check:
        return 0
    env = {**os.environ, "SAE_LAB_DIR": str(Path(args.lab).resolve())}
    if not is_loopback(args.address):
        print(f"The lab is served on {args.address}:{args.port}; open it at http://<this machine>:{args.port}/?token=<your "
              "SAE_LAB_TOKEN>",
              flush=True)
    os.chdir(ROOT)
    os.execve(sys.executable, streamlit_argv(args.address, args.port), env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
