"""Showing card text safely: HTML escaping for the app, Markdown escaping for exported files.

Cards store exactly what the researcher typed, ``<script>`` and ``# heading`` included. Whatever
shows it must escape it: ``escape_html`` for HTML (the app), ``escape_markdown`` for Markdown (the
export), so user text renders as the text it is and can never add a heading, a link, an image,
raw HTML or a table row to the file around it. Model tokens get the same treatment: a tokenizer
can spell ``<`` or ``#`` too.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any, Callable

from findings.model import Card, Revision

# Characters that can start Markdown structure anywhere on a line (CommonMark + GFM tables and
# strikethrough): emphasis, code, links and images, raw HTML and autolinks, headings, entities.
_ALWAYS = frozenset("\\`*_[]<>#|~&!")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_ORDERED = re.compile(r"^(\d{1,9})([.)])")
_NBSP = "\u00a0"


def escape_html(text: Any) -> str:
    """Text for an HTML page: every <, >, &, " and ' escaped (``html.escape`` with quotes)."""
    return html.escape("" if text is None else str(text), quote=True)


def _escape_line(line: str) -> str:
    body = line.lstrip(" \t")
    # Leading blanks would make an indented code block; no-break spaces indent without meaning.
    indent = _NBSP * (len(line) - len(body))
    out = "".join("\\" + c if c in _ALWAYS else c for c in body)
    if out[:1] in ("-", "+", "="):  # list items, setext heading underlines, thematic breaks
        out = "\\" + out
    m = _ORDERED.match(out)
    if m:  # "1." / "1)" would start an ordered list
        out = f"{m.group(1)}\\{m.group(2)}{out[m.end():]}"
    return indent + out


def escape_markdown(text: Any, *, one_line: bool = False) -> str:
    """User text as Markdown that renders as exactly that text, line breaks kept (as hard breaks),
    or joined with spaces when ``one_line`` (list items, headings, table cells)."""
    lines = _LINE_BREAK.split("" if text is None else str(text))
    if one_line:
        return " ".join(_escape_line(x) for x in lines if x.strip()) if len(lines) > 1 else _escape_line(lines[0])
    out = [_escape_line(x) for x in lines]
    # Two trailing spaces keep a line break inside a paragraph; blank lines stay paragraph breaks.
    return "\n".join(x + ("  " if x.strip() and i + 1 < len(out) and out[i + 1].strip() else "") for i, x in enumerate(out))


def markdown_cell(text: Any) -> str:
    """Text for a Markdown table cell: escaped (pipes included), line breaks as <br>."""
    lines = _LINE_BREAK.split("" if text is None else str(text))
    return "<br>".join(_escape_line(x) for x in lines)


def fenced(text: str, lang: str = "") -> str:
    """A fenced code block that ``text`` cannot close: the fence is longer than any run of
    backticks inside it (CommonMark)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def join_tokens(tokens: list[str], center: int | None = None, mark: Callable[[str], str] = lambda t: t,
                escape: Callable[[str], str] = lambda t: t) -> str:
    """Tokens back to text (WordPiece ``##`` pieces glued, byte-level spaces kept), each escaped,
    the centre one passed through ``mark``. Line breaks inside tokens show as ⏎."""
    spaced = any(t.startswith((" ", "\n", "\u0120", "\u010a")) for t in tokens)
    parts: list[str] = []
    for i, t in enumerate(tokens):
        glue = spaced or (t.startswith("##") and i > 0)
        t = t[2:] if (t.startswith("##") and i > 0 and not spaced) else t
        t = t.replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎")
        piece = escape(t)
        if i == center:
            piece = mark(piece)
        parts.append(piece if (glue or not parts) else " " + piece)
    return "".join(parts)


def _mark(piece: str) -> str:
    # ⟦**x**⟧ rather than **⟦x⟧**: the brackets are punctuation, so the emphasis opens and closes
    # whatever the token and its glued neighbours are; leading no-break spaces stay outside it.
    body = piece.lstrip(_NBSP)
    return piece[: len(piece) - len(body)] + (f"⟦**{body}**⟧" if body.strip() else f"⟦{body}⟧")


def context_markdown(tokens: list[str], center: int) -> str:
    """One context window as one Markdown line, the max-activating token in bold between ⟦ ⟧."""
    return join_tokens(list(tokens), center, mark=_mark, escape=lambda t: escape_markdown(t, one_line=True))


def context_html(tokens: list[str], acts: list[float], center: int | None, scale: float | None = None,
                 color: str = "255,140,0") -> str:
    """One context window as HTML: every token escaped, shaded by its activation (relative to
    ``scale``, default the window's peak), the centre token outlined, word pieces (##x) joined to the
    token before them. Shared by the app's inspector, probe and card pages."""
    peak = scale if scale and scale > 0 else max([a for a in acts if a is not None] + [1e-12])
    # Lines break between words only: a token and its ##pieces touch (no break opportunity between
    # them), words are separated by ordinary spaces. (A non-breaking space between every token made
    # the whole context one long word, which the browser then broke anywhere: "r ounded".)
    words: list[list[str]] = []
    for i, t in enumerate(tokens):
        a = acts[i] if i < len(acts) and acts[i] is not None else 0.0
        piece = str(t).startswith("##") and bool(words)
        text = str(t)[2:] if str(t).startswith("##") else str(t)
        style = f"background: rgba({color}, {min(max(a / peak, 0.0), 1.0):.2f}); border-radius: 3px; padding: 0 1px;"
        if center is not None and i == center:
            style += " outline: 1.5px solid #333;"
        title = escape_html(f"{t}: {a:.3f}")
        span = f'<span style="{style}" title="{title}">{escape_html(text)}</span>'
        if piece:
            words[-1].append(span)
        else:
            words.append([span])
    return ('<div style="font-family: ui-monospace, monospace; font-size: 0.88rem; line-height: 1.7; flex: 1; '
            'min-width: 0; overflow-wrap: break-word;">' + " ".join("".join(w) for w in words) + "</div>")


# -- a card as a Markdown file ---------------------------------------------------------------------
def _num(value: Any, fmt: str = ".3g") -> str:
    return "–" if value is None else format(value, fmt)


def _fields_table(card: Card) -> list[str]:
    rows = [("Card", f"`{card.card_id}`"), ("Revision", f"{card.revision} (saved {card.updated_at.replace('T', ' ')[:19]} UTC"
                                                        f" by {markdown_cell(card.updated_by or 'an unnamed author')})"),
            ("Status", card.status), ("Confidence", card.confidence), ("Label", markdown_cell(card.label) or "–"),
            ("Tags", ", ".join(markdown_cell(t) for t in card.tags) or "–"), ("Author", markdown_cell(card.author) or "–"),
            ("Created", card.created_at.replace("T", " ")[:19] + " UTC")]
    if card.deleted_at:
        rows.append(("Deleted", card.deleted_at.replace("T", " ")[:19] + " UTC"))
    return ["| field | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]


def _feature_section(ref, snap: dict[str, Any] | None, top_n: int) -> list[str]:
    out = [f"### Feature {ref.feature} of run {markdown_cell(ref.run_id)}", ""]
    if snap is None:
        return out + ["*The evidence snapshot of this feature is missing from this lab.*", ""]
    data = snap["data"]
    run = data.get("run") or {}
    out.append(f"SAE: {markdown_cell(run.get('model'))}, {markdown_cell(run.get('hook'))} at layer {run.get('layer')}, "
               f"{markdown_cell(run.get('architecture'))} k = {run.get('k')}, d_sae = {run.get('d_sae')}, trained on "
               f"{markdown_cell(run.get('train_domain'))}. Evidence snapshot `{snap['snapshot_id']}`, frozen "
               f"{snap['created_at'].replace('T', ' ')[:19]} UTC.")
    out.append("")
    detail = data.get("detail")
    if not detail:
        return out + [f"*{escape_markdown(data.get('note') or 'No feature analysis was frozen.')}*", ""]
    f = detail.get("feature") or {}
    a = detail.get("analysis") or {}
    if f.get("label"):
        out.append(f"**Automatic label:** {escape_markdown(f['label'], one_line=True)} ({markdown_cell(f.get('label_kind'))}) — "
                   f"detection score {_num(f.get('label_score'), '.3f')} on held-out text (precision "
                   f"{_num(f.get('label_precision'), '.2f')}, "
                   f"recall {_num(f.get('label_recall'), '.2f')}; {_num(f.get('label_train_score'), '.3f')} on the training "
                   "rows).  ")
        if f.get("label_score_low") is not None:
            verdict = ("reliable" if f.get("label_reliable") else
                       "**not reliable**: a best guess, its score does not clear chance (0.5) by 0.1 with 95% confidence")
            out.append(f"95% interval of the detection score: {_num(f.get('label_score_low'), '.3f')}–"
                       f"{_num(f.get('label_score_high'), '.3f')}; "
                       f"{verdict}.  ")
        elif "label_reliable" not in f:
            out.append("(Frozen before labels carried an interval: treat the label as a guess.)  ")
    else:
        out.append("**Automatic label:** none.  ")
    out.append(f"**Class:** {markdown_cell(f.get('class'))}; fires on "
               f"{_num(f.get('freq'), '.3%') if f.get('freq') is not None else '–'} "
               f"of tokens ({f.get('n_fires', '–')}), mean activation {_num(f.get('mean_act'))}, max {_num(f.get('max_act'))}, "
               f"cluster {f.get('cluster') if f.get('cluster') is not None else '–'}; analysis of "
               f"{str(a.get('created_at') or '–').replace('T', ' ')[:19]}.")
    out += ["", "| domain | tokens | fires | freq | mean act | max act | selectivity | detection |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for d in detail.get("domains") or []:
        out.append(f"| {markdown_cell(d.get('domain'))} | {d.get('n_tokens')} | {d.get('n_fires')} | "
                   f"{_num(d.get('freq'), '.4f')} | "
                   f"{_num(d.get('mean_act'))} | {_num(d.get('max_act'))} | {_num(d.get('selectivity'), '.2f')} | "
                   f"{_num(d.get('detection_score'), '.3f')} |")
    out.append("")
    contexts = detail.get("contexts") or {}
    order = [d.get("domain") for d in detail.get("domains") or []]  # the run's domain order (JSON keys come back sorted)
    for dom in [d for d in order if d in contexts] + [d for d in contexts if d not in order]:
        top = (contexts[dom].get("top") or [])[:top_n]
        if not top:
            continue
        out += [f"#### Top contexts on {escape_markdown(dom, one_line=True)}", ""]
        for i, c in enumerate(top, 1):
            held = " (held-out)" if c.get("held_out") else ""
            out.append(f"{i}. `{c['activation']:.3f}`{held} {context_markdown(c.get('tokens') or [], c.get('center', -1))}")
        out.append("")
    te = detail.get("token_effects") or {}
    if te.get("up") or te.get("down"):
        out += ["#### Token effects", ""]
        for direction, word in (("up", "Pushes up"), ("down", "Pushes down")):
            if te.get(direction):
                effects = ", ".join(f"{escape_markdown(e['token'], one_line=True)} ({e['effect']:+.3f})" for e in te[direction])
                out.append(f"- {word}: {effects}")
        out.append("")
    nb = (detail.get("neighbours") or {}).get("decoder") or []
    if nb:
        out += ["#### Nearest features by decoder direction", "",
                ", ".join(f"#{n['neighbour']} {escape_markdown(n.get('label') or '', one_line=True)} "
                          f"({n['score']:.2f})".replace("  ", " ") for n in nb[:8]), ""]
    return out


def card_markdown(card: Card, snapshots: dict[str, dict[str, Any]], history: list[Revision] | None = None, top_n: int = 5) -> str:
    """A card as one readable Markdown file: its fields, its claim and description, the evidence of
    each feature (label and score, statistics, top contexts with the max-activating token marked,
    token effects), attached evidence and its history. User and model text is escaped throughout."""
    out = [f"# {escape_markdown(card.title, one_line=True)}", ""] + _fields_table(card) + [""]
    for heading, text in (("Claim", card.claim), ("Description", card.description), ("Notes", card.notes)):
        if text.strip():
            out += [f"## {heading}", "", escape_markdown(text), ""]
    if card.examples:
        out += ["## Examples", ""] + [f"- {escape_markdown(e, one_line=True)}" for e in card.examples] + [""]
    out += ["## Evidence", ""]
    for ref in card.features:
        out += _feature_section(ref, snapshots.get(ref.snapshot_id or ""), top_n)
    for e in card.evidence:
        snap = snapshots.get(e.snapshot_id)
        out += [f"### Attached evidence {e.evidence_no}: {escape_markdown(e.kind, one_line=True)}", "",
                f"Attached {e.attached_at.replace('T', ' ')[:19]} UTC by {markdown_cell(e.attached_by or 'an unnamed author')}; "
                f"snapshot `{e.snapshot_id}`.", ""]
        if e.note.strip():
            out += [escape_markdown(e.note), ""]
        body = json.dumps(snap["data"], indent=2, sort_keys=True, ensure_ascii=False) if snap else "(missing from this lab)"
        out += [fenced(body, "json"), ""]
    if history:
        out += ["## History", "", "| revision | saved (UTC) | by | action | changed | note |",
                "| ---: | --- | --- | --- | --- | --- |"]
        for r in history:
            out.append(f"| {r.revision} | {r.edited_at.replace('T', ' ')[:19]} | {markdown_cell(r.author) or '–'} | {r.action} | "
                       f"{', '.join(r.changed) or '–'} | {markdown_cell(r.note) or '–'} |")
        out.append("")
    return "\n".join(out)
