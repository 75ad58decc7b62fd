"""One self-contained HTML report of attack runs: ``nlprobust report RUN.jsonl [RUN2.jsonl ...] -o report.html``.

The page needs no network (inline CSS, a few lines of inline JavaScript, plots drawn as inline SVG) and shows:

* a summary table per run (success, words changed, success with at most 1/2/3 words, BLEU/chrF to the
  original input, cost per sentence);
* two plots: the share of sentences attacked successfully within k changed words for every run (the
  success-vs-budget curve), and the histogram of words changed by the successes;
* every example: original and adversarial input with the changed words highlighted, original and adversarial
  output with the keywords highlighted, success, words changed, BLEU, chrF, time; sortable by any column and
  filterable (successes, failures, errors, free text);
* with several runs on the same sentences, the runs side by side per sentence (e.g. Seq2Sick vs the word swap);
* negotiation attack games (records with ``messages``) as transcripts with the attack's edits, and image
  attacks (records with an inline ``image`` data URI) as their pictures.

Every text from a record is HTML-escaped, so inputs holding markup show as text.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nlprobust.core.runio import atomic_write_text, read_jsonl

__all__ = ["build_report", "load_run", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}.sub{color:#5b6475;font-size:13px}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}
th,td{border:1px solid #dde1e8;padding:5px 8px;vertical-align:top;text-align:left}
th{background:#eef1f6;cursor:pointer;white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}
mark.chg{background:#ffd166;padding:0 2px;border-radius:3px;font-weight:600}
mark.kw{background:#9be7c4;padding:0 2px;border-radius:3px}
.ok{color:#0a7a3d;font-weight:600}.bad{color:#b3261e;font-weight:600}.err{color:#8a5a00}
.controls{margin:8px 0;font-size:13px}.controls input{padding:3px 6px;width:240px}
.plots{display:flex;gap:24px;flex-wrap:wrap}.plot{background:#fff;border:1px solid #dde1e8;padding:8px}
.run{font-size:11px;color:#5b6475}pre{white-space:pre-wrap;margin:0;font-size:12px}
"""

_JS = """
function sortTable(th){const t=th.closest('table'),i=[...th.parentNode.children].indexOf(th);
const rows=[...t.tBodies[0].rows],asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
rows.sort((a,b)=>{const x=a.cells[i].dataset.v??a.cells[i].innerText,y=b.cells[i].dataset.v??b.cells[i].innerText;
const nx=parseFloat(x),ny=parseFloat(y);const c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?c:-c});
rows.forEach(r=>t.tBodies[0].appendChild(r));}
function filterRows(id){const t=document.getElementById(id),q=document.getElementById(id+'-q').value.toLowerCase(),
k=document.getElementById(id+'-k').value;let n=0;for(const r of t.tBodies[0].rows){
const okK=k==='all'||r.dataset.status===k,okQ=!q||r.innerText.toLowerCase().includes(q);
r.style.display=okK&&okQ?'':'none';if(okK&&okQ)n++}document.getElementById(id+'-n').innerText=n+' shown';}
document.querySelectorAll('th').forEach(th=>th.addEventListener('click',()=>sortTable(th)));
"""

PALETTE = ("#3b6fd8", "#e07b39", "#2a9d5c", "#b6459e", "#7a6a1f", "#17a2b8")


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def load_run(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A run for the report: its records (the attack's JSON lines) and a label (the file's stem, or the
    attack, goal and preset of its records)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"run file not found: {p}")
    recs = read_jsonl(p)
    if not recs:
        raise ValueError(f"{p} holds no records")
    first = next((r for r in recs if not r.get("error")), recs[0])
    if first.get("attack") and first.get("mode"):
        label = f"{first['attack']} · {first['mode']}" + (" + reduction" if first.get("reduction") else "")
    else:
        label = p.stem
    return {"label": label, "path": str(p), "records": recs}


def _highlight(words: Sequence[str], marked: set[int], cls: str) -> str:
    return " ".join(f'<mark class="{cls}">{_e(w)}</mark>' if i in marked else _e(w) for i, w in enumerate(words))


def _keywords(text: str, keywords: Sequence[str]) -> str:
    kws = {k.lower() for k in keywords}
    out = []
    for w in str(text).split():
        core = w.strip(".,;:!?\"'()").lower()
        out.append(f'<mark class="kw">{_e(w)}</mark>' if core in kws else _e(w))
    return " ".join(out)


def _status(r: dict[str, Any]) -> str:
    return "error" if r.get("error") else ("success" if r.get("success") else "failure")


def _num(x: Any, spec: str = ".2f") -> str:
    return "" if x is None else format(x, spec) if isinstance(x, (int, float)) else _e(x)


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    from nlprobust.results import summarize

    return summarize(r for r in run["records"] if "source" in r)


def _summary_table(runs: Sequence[dict[str, Any]]) -> str:
    cols = [("success", "success %", 100), ("changed", "words changed", 1), ("success_at_1", "≤1 word %", 100),
            ("success_at_2", "≤2 words %", 100), ("success_at_3", "≤3 words %", 100), ("bleu", "BLEU to input", 1),
            ("chrf", "chrF to input", 1), ("time_s", "s / sentence", 1)]
    head = "".join(f"<th>{_e(c[1])}</th>" for c in cols)
    body = []
    for i, run in enumerate(runs):
        s = _summary(run)
        cells = "".join(f'<td class="num">{_num(None if s.get(k) is None else s[k] * f)}</td>' for k, _, f in cols)
        body.append(f'<tr><td><span style="color:{PALETTE[i % len(PALETTE)]}">■</span> {_e(run["label"])}'
                    f'<div class="run">{_e(run["path"])}</div></td><td class="num">{s["n"]}</td>'
                    f'<td class="num">{s["errors"]}</td>{cells}</tr>')
    return (f'<table><thead><tr><th>run</th><th>sentences</th><th>errors</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _svg_budget_curve(runs: Sequence[dict[str, Any]], kmax: int = 8) -> str:
    w, h, pad = 360, 220, 36
    parts = [f'<svg width="{w}" height="{h}" role="img" aria-label="success within k words">',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - 10}" y2="{h - pad}" stroke="#888"/>',
             f'<line x1="{pad}" y1="10" x2="{pad}" y2="{h - pad}" stroke="#888"/>']
    for k in range(kmax + 1):
        x = pad + k * (w - pad - 10) / kmax
        parts.append(f'<text x="{x:.0f}" y="{h - pad + 14}" font-size="10" text-anchor="middle">{k}</text>')
    for v in (0, 50, 100):
        y = h - pad - v / 100 * (h - pad - 10)
        parts.append(f'<text x="{pad - 4}" y="{y + 3:.0f}" font-size="10" text-anchor="end">{v}%</text>')
    for i, run in enumerate(runs):
        ok = [r for r in run["records"] if not r.get("error") and "changed" in r]
        if not ok:
            continue
        pts = []
        for k in range(kmax + 1):
            share = sum(1 for r in ok if r.get("success") and r["changed"] <= k) / len(ok)
            pts.append(f"{pad + k * (w - pad - 10) / kmax:.1f},{h - pad - share * (h - pad - 10):.1f}")
        parts.append(f'<polyline fill="none" stroke="{PALETTE[i % len(PALETTE)]}" stroke-width="2" '
                     f'points="{" ".join(pts)}"/>')
    parts.append(f'<text x="{w / 2:.0f}" y="{h - 4}" font-size="11" text-anchor="middle">words changed at most'
                 f'</text></svg>')
    return "".join(parts)


def _svg_histogram(runs: Sequence[dict[str, Any]], kmax: int = 10) -> str:
    w, h, pad = 360, 220, 36
    counts = []
    for run in runs:
        c = [0] * (kmax + 1)
        for r in run["records"]:
            if r.get("success") and not r.get("error") and "changed" in r:
                c[min(kmax, int(r["changed"]))] += 1
        counts.append(c)
    top = max([1] + [max(c) for c in counts])
    slot = (w - pad - 10) / (kmax + 1)
    bar = slot / max(1, len(runs)) * 0.9
    parts = [f'<svg width="{w}" height="{h}" role="img" aria-label="histogram of words changed">',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - 10}" y2="{h - pad}" stroke="#888"/>']
    for k in range(kmax + 1):
        label = f"{k}+" if k == kmax else str(k)
        parts.append(f'<text x="{pad + (k + 0.5) * slot:.0f}" y="{h - pad + 14}" font-size="10" '
                     f'text-anchor="middle">{label}</text>')
    for i, c in enumerate(counts):
        for k, n in enumerate(c):
            hh = n / top * (h - pad - 10)
            parts.append(f'<rect x="{pad + k * slot + i * bar:.1f}" y="{h - pad - hh:.1f}" width="{bar:.1f}" '
                         f'height="{hh:.1f}" fill="{PALETTE[i % len(PALETTE)]}"><title>{n}</title></rect>')
    parts.append(f'<text x="{pad - 4}" y="16" font-size="10" text-anchor="end">{top}</text>'
                 f'<text x="{w / 2:.0f}" y="{h - 4}" font-size="11" text-anchor="middle">words changed (successes)'
                 f'</text></svg>')
    return "".join(parts)


def _example_row(r: dict[str, Any], label: str | None = None) -> str:
    st = _status(r)
    src_words = r.get("source_words") or str(r.get("source", "")).split()
    adv_words = r.get("adversarial_words") or str(r.get("adversarial", "")).split()
    changed = set(r.get("changed_positions") or [])
    kws = r.get("keywords") or []
    status = {"success": '<span class="ok">success</span>', "failure": '<span class="bad">failure</span>',
              "error": f'<span class="err">error: {_e(r.get("error"))}</span>'}[st]
    run = f'<div class="run">{_e(label)}</div>' if label else ""
    return (f'<tr data-status="{st}"><td class="num">{_e(r.get("index"))}</td>'
            f'<td>{_e(" ".join(src_words))}{run}</td><td>{_highlight(adv_words, changed, "chg")}</td>'
            f'<td>{_keywords(r.get("original_output", ""), kws)}</td>'
            f'<td>{_keywords(r.get("adversarial_output", ""), kws)}</td><td>{_e(" ".join(kws))}</td>'
            f'<td data-v="{st}">{status}</td><td class="num">{_num(r.get("changed"), "d")}</td>'
            f'<td class="num">{_num(r.get("bleu"))}</td><td class="num">{_num(r.get("chrf"))}</td>'
            f'<td class="num">{_num(r.get("time_s"))}</td></tr>')


_EXAMPLE_HEAD = ("<tr><th>#</th><th>original input</th><th>adversarial input</th><th>original output</th>"
                 "<th>adversarial output</th><th>keywords</th><th>result</th><th>words changed</th><th>BLEU</th>"
                 "<th>chrF</th><th>s</th></tr>")


def _examples(run_id: str, rows: str, count: int) -> str:
    return (f'<div class="controls">show <select id="{run_id}-k" onchange="filterRows(\'{run_id}\')">'
            f'<option value="all">all</option><option value="success">successes</option>'
            f'<option value="failure">failures</option><option value="error">errors</option></select> '
            f'<input id="{run_id}-q" placeholder="filter by text" oninput="filterRows(\'{run_id}\')"> '
            f'<span id="{run_id}-n">{count} shown</span> · click a column title to sort</div>'
            f'<table id="{run_id}"><thead>{_EXAMPLE_HEAD}</thead><tbody>{rows}</tbody></table>')


def _side_by_side(runs: Sequence[dict[str, Any]]) -> str:
    by = [{r.get("index"): r for r in run["records"]} for run in runs]
    common = sorted(set.intersection(*(set(b) for b in by)), key=lambda x: (str(type(x)), x))
    if not common:
        return "<p>The runs share no sentence index.</p>"
    rows = []
    for idx in common:
        for i, run in enumerate(runs):
            rows.append(_example_row(by[i][idx], run["label"]))
    return _examples("side", "".join(rows), len(rows))


def _game(r: dict[str, Any]) -> str:
    lines = []
    for speaker, text in r.get("messages", []):
        who = "attacker" if speaker == "a" else "target"
        lines.append(f"<b>{who}</b>: {_e(text)}")
    edits = [f"turn {e.get('turn')} ({_e(e.get('kind'))}): “{_e(e.get('draft'))}” → "
             f"“{_highlight(str(e.get('message', '')).split(), set(), 'chg')}”" + (" ✓" if e.get("success") else "")
             for e in r.get("events", [])]
    scores = r.get("scores") or ["", ""]
    return (f'<tr data-status="{"success" if r.get("agreed") else "failure"}"><td class="num">{_e(r.get("index"))}'
            f'</td><td><pre>{"<br>".join(lines)}</pre></td><td>{"<br>".join(edits)}</td>'
            f'<td class="num">{_e(scores[0])} : {_e(scores[1])}</td><td>{"yes" if r.get("agreed") else "no"}</td></tr>')


def _image(r: dict[str, Any]) -> str:
    def img(key: str) -> str:
        uri = str(r.get(key) or "")
        return f'<img alt="{_e(key)}" src="{_e(uri)}" width="84">' if uri.startswith("data:image/") else ""

    return (f'<tr data-status="{"success" if r.get("success") else "failure"}"><td class="num">{_e(r.get("index"))}'
            f'</td><td>{img("image")}</td><td>{img("adversarial_image")}</td><td>{_e(r.get("label"))} → '
            f'{_e(r.get("adversarial_label"))}</td><td class="num">{_num(r.get("distance"), ".4f")}</td>'
            f'<td class="num">{_e(r.get("queries"))}</td></tr>')


def build_report(runs: Sequence[dict[str, Any]], *, title: str = "nlprobust report") -> str:
    """The HTML page of ``runs`` (each from :func:`load_run`)."""
    if not runs:
        raise ValueError("no runs to report")
    text_runs = [r for r in runs if any("source" in x for x in r["records"])]
    game_runs = [r for r in runs if any("messages" in x for x in r["records"])]
    image_runs = [r for r in runs if any("image" in x for x in r["records"])]
    parts = [f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
             f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>"
             f'<div class="sub">{len(runs)} run(s): ' + ", ".join(_e(r["path"]) for r in runs) + "</div>"]
    if text_runs:
        parts.append("<h2>Summary</h2>" + _summary_table(text_runs))
        parts.append('<h2>Success and size</h2><div class="plots"><div class="plot">'
                     "<div class=sub>sentences attacked successfully within k changed words</div>"
                     f"{_svg_budget_curve(text_runs)}</div><div class=\"plot\"><div class=sub>words changed by the "
                     f"successes</div>{_svg_histogram(text_runs)}</div></div>")
        if len(text_runs) > 1:
            parts.append("<h2>Side by side (the same sentences)</h2>" + _side_by_side(text_runs))
        for i, run in enumerate(text_runs):
            rows = "".join(_example_row(r) for r in run["records"] if "source" in r)
            parts.append(f"<h2>Examples: {_e(run['label'])}</h2>" + _examples(f"run{i}", rows, len(run["records"])))
    for i, run in enumerate(game_runs):
        rows = "".join(_game(r) for r in run["records"] if "messages" in r)
        parts.append(f"<h2>Negotiation games: {_e(run['label'])}</h2><table id=\"game{i}\"><thead><tr><th>#</th>"
                     f"<th>dialogue</th><th>attack edits</th><th>scores (attacker : target)</th><th>agreed</th></tr>"
                     f"</thead><tbody>{rows}</tbody></table>")
    for i, run in enumerate(image_runs):
        rows = "".join(_image(r) for r in run["records"] if "image" in r)
        parts.append(f"<h2>Image attacks: {_e(run['label'])}</h2><table id=\"img{i}\"><thead><tr><th>#</th>"
                     f"<th>original</th><th>adversarial</th><th>label</th><th>distance</th><th>queries</th></tr>"
                     f"</thead><tbody>{rows}</tbody></table>")
    parts.append(f"<script>{_JS}</script></body></html>")
    return "".join(parts)


def write_report(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                 title: str = "nlprobust report") -> Path:
    """Load every run of ``paths`` and write their report to ``out`` (atomically); returns ``out``."""
    runs = [load_run(p) for p in paths]
    target = Path(out)
    atomic_write_text(target, build_report(runs, title=title))
    return target

