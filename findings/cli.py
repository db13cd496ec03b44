"""``python -m engine findings ...``: cards from the command line.

Added to the engine's parser by ``add_findings_commands(subparsers)``; each action is a
``fn(args, lab) -> int`` like the engine's own commands, and every mistake is a LabError (one
line, non-zero exit). ``main`` is the engine's command line with these commands added: what
``python -m engine`` runs (engine/__main__.py), since the engine never imports the findings.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import LabError
from engine.cli import main as engine_main
from engine.tables import format_table
from findings.evidence import card_evidence, live_status
from findings.export import export_json, export_markdown, export_registry, import_json, import_registry
from findings.model import FeatureRef
from findings.prefill import card_from_feature
from findings.render import card_markdown
from findings.search import search_cards
from findings.store import card_history, delete_card, get_card, purge_card, restore_card, update_card

TEXT_FIELDS = ("title", "claim", "label", "description", "confidence", "status", "notes")
LIST_FIELDS = ("tags", "examples")


def _int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def default_author() -> str:
    """Who is typing: $SAE_LAB_AUTHOR, else the login name."""
    try:
        return os.environ.get("SAE_LAB_AUTHOR") or getpass.getuser()
    except Exception:  # no login name in some containers
        return ""


def main(argv: list[str] | None = None) -> int:
    """``python -m engine``: the engine's commands and the findings commands."""
    return engine_main(argv, extra_commands=[add_findings_commands])


def add_findings_commands(sub) -> None:
    p = sub.add_parser("findings", help="findings cards: curated feature labels with their evidence and history")
    actions = p.add_subparsers(dest="findings_action", required=True, metavar="ACTION")

    s = actions.add_parser("new", help="a draft card about one feature, prefilled from its analysis")
    s.add_argument("--run", required=True, help="run id")
    s.add_argument("--feature", required=True, type=_int_arg, help="feature index")
    for name in TEXT_FIELDS:
        s.add_argument(f"--{name}", help=f"{name} (instead of the prefilled one)")
    s.add_argument("--tag", action="append", help="a tag (repeat for more; replaces the prefilled class tag)")
    s.add_argument("--example", action="append", help="an example text (repeat for more)")
    _who(s)
    s.set_defaults(fn=cmd_new)

    s = actions.add_parser("list", help="cards, most recently updated first, filtered by text, tag, status, run, feature")
    s.add_argument("--text", help="words that must all occur in the card (id, title, claim, label, description, notes, tags, "
                                  "examples)")
    s.add_argument("--tag")
    s.add_argument("--status", help="draft, supported or refuted")
    s.add_argument("--run", help="cards about this run")
    s.add_argument("--feature", type=_int_arg, help="cards about this feature index")
    s.add_argument("--deleted", action="store_true", help="include deleted cards")
    s.add_argument("--json", action="store_true", help="print the cards as JSON")
    s.set_defaults(fn=cmd_list, read_only=True)

    s = actions.add_parser("show", help="one card, with its evidence and the live state of its features")
    s.add_argument("card")
    s.add_argument("--revision", type=_int_arg, help="show the card as it was at this revision")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print the card as JSON")
    g.add_argument("--markdown", action="store_true", help="print the card as its Markdown export")
    s.set_defaults(fn=cmd_show, read_only=True)

    s = actions.add_parser("history", help="every revision of a card: who, when, what changed")
    s.add_argument("card")
    s.set_defaults(fn=cmd_history, read_only=True)

    s = actions.add_parser("edit", help="save an edit as the next revision (refused if the card changed since VERSION)")
    s.add_argument("card")
    s.add_argument("--version", required=True, type=_int_arg, help="the revision you read (findings show CARD)")
    s.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help=f"set a field: {', '.join(TEXT_FIELDS + LIST_FIELDS)} (tags/examples: comma-separated or a JSON list)")
    s.add_argument("--set-file", action="append", default=[], metavar="FIELD=PATH", help="set a text field to a file's contents")
    s.add_argument("--add-feature", action="append", default=[], metavar="RUN:FEATURE",
                   help="add a feature (with a fresh snapshot)")
    s.add_argument("--remove-feature", action="append", default=[], metavar="RUN:FEATURE")
    s.add_argument("--refresh-evidence", action="store_true", help="re-freeze the evidence of features whose run still exists")
    _who(s)
    s.set_defaults(fn=cmd_edit)

    s = actions.add_parser("delete", help="delete a card (restorable); --purge removes it and its unshared evidence for good")
    s.add_argument("card")
    s.add_argument("--version", type=_int_arg, help="refuse if the card changed since this revision")
    s.add_argument("--purge", action="store_true", help="remove the card and its history for good")
    _who(s)
    s.set_defaults(fn=cmd_delete)

    s = actions.add_parser("restore", help="bring a deleted card back")
    s.add_argument("card")
    s.add_argument("--version", type=_int_arg)
    _who(s)
    s.set_defaults(fn=cmd_restore)

    s = actions.add_parser("export", help="cards as Markdown files, JSON (everything) or a seed-004 feature registry")
    s.add_argument("cards", nargs="*", metavar="CARD", help="cards to export (default: every live card)")
    s.add_argument("--format", required=True, choices=("md", "json", "registry"))
    s.add_argument("--out", required=True, help="a folder for md; a file (or - for stdout) for json and registry")
    s.add_argument("--run", help="registry: only this run's features, keyed by feature index as in seed 004")
    s.add_argument("--deleted", action="store_true", help="include deleted cards")
    s.set_defaults(fn=cmd_export, read_only=True)

    s = actions.add_parser("import", help="import a findings JSON export, or (--registry) a seed-004 feature registry")
    s.add_argument("path")
    s.add_argument("--registry", action="store_true", help="the file is a feature registry {feature_id: {name, ...}}")
    s.add_argument("--run", help="registry: the run its bare feature indices belong to")
    s.add_argument("--author", default=None, help="who imports (default $SAE_LAB_AUTHOR or your login)")
    s.set_defaults(fn=cmd_import)


def _who(s: argparse.ArgumentParser) -> None:
    s.add_argument("--author", default=None, help="who saves (default $SAE_LAB_AUTHOR or your login)")
    s.add_argument("--note", default="", help="a change note kept with the revision")


def _author(args) -> str:
    return args.author if args.author is not None else default_author()


# -- handlers --------------------------------------------------------------------------------------
def cmd_new(args, lab) -> int:
    overrides: dict[str, Any] = {n: getattr(args, n) for n in TEXT_FIELDS if getattr(args, n) is not None}
    if args.tag is not None:
        overrides["tags"] = args.tag
    if args.example is not None:
        overrides["examples"] = args.example
    card = card_from_feature(lab, args.run, args.feature, author=_author(args), note=args.note, **overrides)
    print(f"created {card.card_id} (revision 1): {card.title}")
    print(f"  {card.claim}")
    print(f"  edit with: python -m engine findings edit {card.card_id} --version 1 --set status=supported ...")
    return 0


def _features_text(card) -> str:
    return ", ".join(f"{f.run_id}:{f.feature}" for f in card.features)


def cmd_list(args, lab) -> int:
    cards = search_cards(lab, text=args.text, tag=args.tag, status=args.status, run_id=args.run, feature=args.feature,
                         include_deleted=args.deleted)
    if args.json:
        print(json.dumps([c.to_dict() for c in cards], indent=2, ensure_ascii=False))
        return 0
    if not cards:
        print("no cards match" if any(v is not None for v in (args.text, args.tag, args.status, args.run, args.feature))
              else "no cards yet: python -m engine findings new --run RUN --feature N")
        return 0
    df = pd.DataFrame([{"card": c.card_id, "rev": c.revision, "status": c.status + (" (deleted)" if c.deleted else ""),
                        "confidence": c.confidence, "title": c.title, "features": _features_text(c), "tags": ", ".join(c.tags),
                        "updated": c.updated_at.replace("T", " ")[:16]} for c in cards])
    print(format_table(df, max_rows=len(df)))
    return 0


def cmd_show(args, lab) -> int:
    card = get_card(lab, args.card, args.revision)
    if args.json:
        print(json.dumps(card.to_dict(), indent=2, ensure_ascii=False))
        return 0
    snaps = card_evidence(lab, card)
    if args.markdown:
        print(card_markdown(card, snaps, card_history(lab, card.card_id)))
        return 0
    print(f"{card.card_id} revision {card.revision}{' (DELETED ' + card.deleted_at[:19] + ')' if card.deleted else ''}: "
          f"{card.title}")
    print(f"  status {card.status}, confidence {card.confidence}, label: {card.label or '-'}")
    print(f"  tags: {', '.join(card.tags) or '-'}; author {card.author or '-'}; saved {card.updated_at[:19].replace('T', ' ')} "
          f"by {card.updated_by or '-'}")
    for name in ("claim", "description", "notes"):
        text = getattr(card, name)
        if text.strip():
            print(f"  {name}:")
            for line in text.splitlines():
                print(f"    {line}")
    if card.examples:
        print("  examples:")
        for e in card.examples:
            print(f"    - {e}")
    states = {(s["run_id"], s["feature"]): s["state"] for s in live_status(lab, card)}
    for f in card.features:
        data = (snaps.get(f.snapshot_id or "") or {}).get("data") or {}
        row = (data.get("detail") or {}).get("feature") or {}
        score = row.get("label_score")
        frozen = (f"frozen label \"{row.get('label') or '-'}\" (detection {score:.2f})" if score is not None
                  else data.get("note") or "no label frozen")
        print(f"  feature {f.feature} of run {f.run_id} ({f.hook}@{f.layer}): {frozen}; live: {states.get(f.key, '?')}")
    for e in card.evidence:
        print(f"  evidence {e.evidence_no}: {e.kind} ({e.snapshot_id}) {e.note}")
    return 0


def cmd_history(args, lab) -> int:
    for r in card_history(lab, args.card):
        changed = ", ".join(r.changed) or "-"
        print(f"revision {r.revision}  {r.edited_at[:19]}  {r.author or '-':<12}  {r.action:<8}  changed: {changed}"
              + (f"  note: {r.note}" if r.note else ""))
    return 0


def _split_assignment(text: str, flag: str) -> tuple[str, str]:
    if "=" not in text:
        raise LabError(f"{flag} '{text}' is not of the form FIELD=VALUE: write e.g. {flag} status=supported")
    name, value = text.split("=", 1)
    name = name.strip()
    if name not in TEXT_FIELDS + LIST_FIELDS:
        raise LabError(f"{flag} '{name}' is not a field you can set: use one of {', '.join(TEXT_FIELDS + LIST_FIELDS)}")
    return name, value


def _list_value(value: str) -> list[str]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, list):
        return parsed
    return [v for v in (x.strip() for x in value.split(",")) if v]


def cmd_edit(args, lab) -> int:
    changes: dict[str, Any] = {}
    for text in args.set:
        name, value = _split_assignment(text, "--set")
        changes[name] = _list_value(value) if name in LIST_FIELDS else value
    for text in args.set_file:
        name, path = _split_assignment(text, "--set-file")
        try:
            value = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise LabError(f"cannot read {path} for --set-file {name}: {e}") from None
        changes[name] = _list_value(value) if name in LIST_FIELDS else value
    if args.add_feature or args.remove_feature:
        current = get_card(lab, args.card)
        remove = {FeatureRef.from_dict(FeatureRef.coerce(t, "--remove-feature")).key for t in args.remove_feature}
        missing = remove - {f.key for f in current.features}
        if missing:
            run, feat = sorted(missing)[0]
            raise LabError(f"--remove-feature {run}:{feat}: the card has no such feature (it has {_features_text(current)})")
        changes["features"] = [f for f in current.features if f.key not in remove] + list(args.add_feature)
    if not changes and not args.refresh_evidence:
        raise LabError("nothing to change: give --set FIELD=VALUE, --add-feature, --remove-feature or --refresh-evidence")
    card = update_card(lab, args.card, args.version, changes, author=_author(args), note=args.note,
                       refresh_evidence=args.refresh_evidence)
    if card.revision == args.version:
        print(f"{card.card_id}: nothing changed, still revision {card.revision}")
    else:
        print(f"{card.card_id}: saved revision {card.revision}")
    return 0


def cmd_delete(args, lab) -> int:
    if args.purge:
        res = purge_card(lab, args.card, args.version)
        print(f"{args.card} purged; {len(res['snapshots_removed'])} evidence snapshots removed, "
              f"{len(res['snapshots_kept'])} kept (other cards refer to them)")
        return 0
    card = delete_card(lab, args.card, args.version, author=_author(args), note=args.note)
    print(f"{card.card_id} deleted (revision {card.revision}); bring it back with: python -m engine findings restore "
          f"{card.card_id}")
    return 0


def cmd_restore(args, lab) -> int:
    card = restore_card(lab, args.card, args.version, author=_author(args), note=args.note)
    print(f"{card.card_id} restored (revision {card.revision})")
    return 0


def _write_text(out: str, text: str) -> None:
    if out == "-":
        sys.stdout.write(text)
        return
    path = Path(out)
    if path.is_dir():
        raise LabError(f"--out {out} is a folder: give a file name, e.g. {Path(out) / 'findings.json'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def cmd_export(args, lab) -> int:
    ids = list(args.cards) or None
    if args.run and args.format != "registry":
        raise LabError("--run applies to --format registry only: pick the cards to export by id, or use findings list --run")
    if args.format == "md":
        if args.out == "-":
            raise LabError("--format md writes one file per card: give a folder as --out")
        paths = export_markdown(lab, ids, args.out, include_deleted=args.deleted)
        print(f"{len(paths)} card{'s' if len(paths) != 1 else ''} written to {args.out}")
        return 0
    data = (export_json(lab, ids, include_deleted=args.deleted) if args.format == "json"
            else export_registry(lab, ids, run_id=args.run))
    _write_text(args.out, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    if args.out != "-":
        n = len(data["cards"]) if args.format == "json" else len(data)
        print(f"{n} {'cards' if args.format == 'json' else 'registry entries'} written to {args.out}")
    return 0


def cmd_import(args, lab) -> int:
    try:
        data = json.loads(Path(args.path).read_text(encoding="utf-8"))
    except OSError as e:
        raise LabError(f"cannot read {args.path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LabError(f"{args.path} is not JSON ({e}): check the file") from None
    if args.registry:
        res = import_registry(lab, data, run_id=args.run, author=_author(args))
        print(f"{len(res['created'])} cards created, {len(res['skipped'])} entries skipped (already on a card)")
        return 0
    if args.run:
        raise LabError("--run applies to --registry imports only (a findings export names its runs)")
    res = import_json(lab, data)
    print(f"{len(res['created'])} cards created, {len(res['updated'])} updated, {len(res['unchanged'])} unchanged, "
          f"{res['snapshots_added']} evidence snapshots added")
    return 0
