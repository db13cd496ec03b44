"""CLI: ``runs mark-failed RUN_ID`` and ``runs delete RUN_ID`` (run administration).

``mark-failed`` ends a RUNNING run whose process is gone (and refuses one whose process is alive);
``delete`` removes a finished, failed or killed run's rows and folder (findings cards that mention
it keep their frozen evidence). Both are one-line answers, like every command.
"""

from __future__ import annotations

import argparse

from engine.run_admin import delete_run, mark_failed


def cmd_mark_failed(args, lab) -> int:
    error = mark_failed(lab, args.run_id)
    print(f"run {args.run_id} marked FAILED ({error}); delete it with: python -m engine runs delete {args.run_id}")
    return 0


def cmd_delete(args, lab) -> int:
    deleted = delete_run(lab, args.run_id)
    rows = ", ".join(f"{t} {n}" for t, n in sorted(deleted.items()) if n)
    print(f"run {args.run_id} deleted: rows removed ({rows or 'none'}) and its folder {lab.relative(lab.run_dir(args.run_id))}; "
          "findings cards that mention it keep their frozen evidence")
    return 0


def add_run_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="run administration: mark a stuck RUNNING run failed, delete a run")
    actions = p.add_subparsers(dest="runs_command", required=True)

    s = actions.add_parser("mark-failed", help="end a RUNNING run whose process is gone as FAILED (refused while it is alive)")
    s.add_argument("run_id")
    s.set_defaults(fn=cmd_mark_failed, recover=False)

    s = actions.add_parser("delete", help="delete a run's rows in every table and its folder (findings cards are kept)")
    s.add_argument("run_id")
    s.set_defaults(fn=cmd_delete)
