"""The report page: one HTML file with the charts embedded as data URIs (opens offline)."""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Mapping
from pathlib import Path

from evolve.inspect.report_data import RunSnapshot
from evolve.inspect.trust import unsandboxed_note
from population.candidate import Candidate, Status
from population.store import edits_from_seed

CSS = """
body { font: 15px/1.45 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif;
       color: #1d1d1f; margin: 0 auto; max-width: 1180px; padding: 24px 28px 60px; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 34px 0 10px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 22px 0 6px; }
.sub { color: #555; margin: 0 0 14px; }
.facts { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.fact { border: 1px solid #e0e0e0; border-radius: 6px; padding: 6px 12px; background: #fafafa; }
.fact b { display: block; font-size: 18px; }
figure { margin: 14px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eee; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #fff8dc; }
.better { color: #1a7f37; } .worse { color: #c62828; }
.status-crashed, .status-timed_out, .status-rejected { color: #c62828; }
pre { background: #f7f7f9; border: 1px solid #e4e4e8; border-radius: 4px; padding: 10px;
      overflow-x: auto; font: 12.5px/1.4 "DejaVu Sans Mono", Menlo, Consolas, monospace; }
pre.diff span { display: block; white-space: pre; }
pre.diff .add { background: #e6ffec; color: #116329; }
pre.diff .del { background: #ffebe9; color: #82071e; }
pre.diff .hunk { color: #0550ae; background: #f0f6ff; }
pre.diff .meta { color: #6e7781; }
.step { border-left: 3px solid #1f77b4; padding-left: 14px; margin: 18px 0 26px; }
.metrics { color: #333; font-size: 14px; } .rationale { color: #333; font-style: italic; }
"""


LEGEND = (
    '<p class="sub" id="legend"><b>gen.</b>: edits from the seed (a migration or '
    "island-seeding copy has its source's code and adds none). "
    "<b>keep</b>: the experiment entered its island's population, i.e. it ranked among the "
    "island's survivors when it finished (as in results.tsv); it need not beat the run's best "
    "or even its parent. <b>discard</b>: it finished outside the population. "
    "<b>improved</b> ✓: it beat its parent's val_bpb (what a one-agent loop calls keep).</p>")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _bpb(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _metric(candidate: Candidate, key: str) -> float | None:
    value = candidate.metrics.get(key)
    return float(value) if isinstance(value, int | float) else None


def _delta(run: RunSnapshot, candidate: Candidate) -> tuple[str, str]:
    """Δval_bpb against the parent, as text and a CSS class."""
    parent = run.parent(candidate)
    if parent is None or parent.val_bpb is None or candidate.val_bpb is None:
        return "—", ""
    delta = candidate.val_bpb - parent.val_bpb
    return f"{delta:+.4f}", "better" if delta < 0 else "worse" if delta > 0 else ""


def _image(png: Path, alt: str, caption: str) -> str:
    raw = png.read_bytes()
    # shown at ~120 px per inch of the 200-dpi figure: full size on a page, sharp when zoomed
    width = int(int.from_bytes(raw[16:20], "big") * 0.6)
    data = base64.b64encode(raw).decode("ascii")
    return (f'<figure><img alt="{_e(alt)}" width="{width}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def render_diff(diff: str) -> str:
    """A unified diff as HTML: escaped, one span per line, additions and deletions coloured."""
    spans = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---", "diff ", "index ", "\\")):
            kind = "meta"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        spans.append(f'<span class="{kind}">{_e(line) or " "}</span>')
    return f'<pre class="diff">{"".join(spans)}</pre>' if spans else "<p>(no change)</p>"


def _facts(run: RunSnapshot) -> str:
    counts = run.counts
    finished = len(run.experiments)
    items = [("experiments finished", str(finished)),
             ("done / crashed / timed out",
              f"{counts['done']} / {counts['crashed']} / {counts['timed_out']}"),
             ("rejected before running", str(counts["rejected"])),
             ("running or queued", str(counts["running"] + counts["proposed"])),
             ("best val_bpb", _bpb(run.best.val_bpb) if run.best else "—")]
    if run.best_lineage and run.best_lineage[0].val_bpb is not None and run.best:
        gain = run.best_lineage[0].val_bpb - (run.best.val_bpb or 0.0)
        items.append(("gain over the seed", f"{gain:.4f} bpb"))
    if run.floor is not None:
        items.append(("entropy floor (synthetic)", f"{run.floor:.4f}"))
    if run.trust.sigma is not None:
        items.append(("seed noise σ", f"{run.trust.sigma:.5f} ({len(run.trust.noise_runs)} seeds)"))
    if run.trust.decisions:
        accepted = sum(d.accepted for d in run.trust.decisions)
        untrusted = sum(d.untrusted for d in run.trust.decisions)
        items.append(("re-run decisions", f"{accepted} confirmed / "
                      f"{len(run.trust.decisions) - accepted} not credited"
                      + (f" ({untrusted} untrusted)" if untrusted else "")))
    if run.best is not None and run.best.test_bpb is not None:
        items.append(("best: val / held-out test",
                      f"{_bpb(run.best.val_bpb)} / {_bpb(run.best.test_bpb)}"))
    if run.best is not None and run.best.unsandboxed:
        items.append(("best score", f"unsandboxed: {run.best.sandbox_problem}"))
    unsandboxed = [c for c in run.experiments if c.unsandboxed]
    if unsandboxed:
        items.append(("unsandboxed scores", f"{len(unsandboxed)} of {counts['done']}"))
    items.append(("LLM spend", f"${run.total_cost:.2f}"))
    return '<div class="facts">' + "".join(
        f'<div class="fact">{_e(k)}<b>{_e(v)}</b></div>' for k, v in items) + "</div>"


def _top_table(run: RunSnapshot) -> str:
    rows = []
    for rank, c in enumerate(run.top, start=1):
        delta, cls = _delta(run, c)
        model = f"{c.mutator} ({c.model})" if c.model else c.mutator
        if c.donor_id:
            model += f" ← {c.donor_id}"
        best = ' class="best"' if run.best is not None and c.id == run.best.id else ""
        kept = "keep" if run.kept.get(c.id) else "discard"
        improved = "✓" if cls == "better" else ""
        rows.append(
            f"<tr{best}><td class=num>{rank}</td><td><code>{_e(c.id)}</code></td>"
            f"<td class=num>{c.island}</td><td class=num>{edits_from_seed(run.lineage_of(c))}</td>"
            f"<td class=num>{_bpb(c.val_bpb)}{_e(unsandboxed_note(c, reason=False))}</td>"
            f'<td class="num {cls}">{delta}</td><td class="better">{improved}</td>'
            f"<td>{kept}</td><td>{_e(c.description)}</td>"
            f"<td>{_e(model)}</td><td class=num>${c.cost_usd:.4f}</td></tr>")
    if not rows:
        return "<p>No candidate has finished with a score yet.</p>"
    return ("<table><tr><th>#</th><th>id</th><th>island</th><th>gen.</th><th>val_bpb</th>"
            "<th>Δ vs parent</th><th>improved</th><th>status</th>"
            "<th>description</th><th>mutator</th><th>cost</th></tr>" + "".join(rows)
            + f"</table>{LEGEND}")


def _lineage_steps(run: RunSnapshot) -> str:
    if not run.best_lineage:
        return "<p>No best candidate yet.</p>"
    parts = []
    for n, c in enumerate(run.best_lineage):
        delta, cls = _delta(run, c)
        parent = run.parent(c)
        bits = [f"val_bpb {_bpb(parent.val_bpb) if parent else '—'} → <b>{_bpb(c.val_bpb)}</b>"
                if parent else f"val_bpb <b>{_bpb(c.val_bpb)}</b>"]
        if delta != "—":
            bits.append(f'<span class="{cls}">Δ {delta}</span>')
        if c.unsandboxed:
            bits.append(_e(unsandboxed_note(c).strip()))
        if c.test_bpb is not None:  # the final lineage: its held-out score may be seen now
            bits.append(f"test_bpb {c.test_bpb:.4f}")
        seconds = _metric(c, "training_seconds")
        if seconds is not None:
            bits.append(f"trained {seconds:.0f} s" if seconds >= 10 else f"trained {seconds:.1f} s")
        bits.append(f"island {c.island}")
        bits.append(_e(f"{c.mutator or 'seed'}" + (f" ({c.model})" if c.model else "")))
        if c.donor_id:
            bits.append(f"donor <code>{_e(c.donor_id)}</code>")
        if c.cost_usd:
            bits.append(f"${c.cost_usd:.4f}")
        title = "Seed" if n == 0 else f"Step {n}: {c.description or c.id}"
        rationale = (f'<p class="rationale">{_e(c.rationale)}</p>' if c.rationale.strip() else "")
        body = render_diff(run.diff(c)) if n else "<p>The template's seed training script.</p>"
        parts.append(
            f'<div class="step" id="step-{n}"><h3>{_e(title)} <code>{_e(c.id)}</code></h3>'
            f'<p class="metrics">{" · ".join(bits)}</p>{rationale}{body}</div>')
    return "".join(parts)


def _failures(run: RunSnapshot) -> str:
    if not run.failures:
        return "<p>None.</p>"
    rows = "".join(
        f"<tr><td><code>{_e(c.id)}</code></td>"
        f'<td class="status-{c.status.value}">{_e(c.status.value)}</td>'
        f"<td>{_e(c.description)}</td><td>{_e(c.reason)}</td></tr>" for c in run.failures)
    return ("<table><tr><th>id</th><th>status</th><th>description</th><th>reason</th></tr>"
            + rows + "</table>")


def render_html(run: RunSnapshot, charts: Mapping[str, Path]) -> str:
    """The whole page; every image is inlined, so the file can be mailed or opened offline."""
    live = run.counts[Status.RUNNING.value] + run.counts[Status.PROPOSED.value]
    state = "in progress" if live else "finished"
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    best = run.best
    best_line = (f"best <code>{_e(best.id)}</code>: {_e(best.description or 'the seed')}"
                 if best else "no scored candidate yet")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>evolve report — {_e(run.name)}</title><style>{CSS}</style></head>
<body>
<h1>evolve report — {_e(run.name)}</h1>
<p class="sub">Run {state}, read {stamp}; {best_line}. Source: <code>{_e(run.path)}</code></p>
{_facts(run)}
<h2 id="charts">Progress</h2>
{_image(charts["progress"], "search progress chart",
        "Validation bits per byte of every finished experiment in order of completion; "
        "filled: kept (entered its island's population, not necessarily a new best), hollow: "
        "discarded, red crosses: crashed or timed out; the black step line is the best so far. "
        "The axis fits the scores; an entropy floor beyond it is an arrow at the edge.")}
{_image(charts["islands"], "per-island best curves",
        "Best validation bpb on each island (migrations included); axis fitted to the curves.")}
{_image(charts["lineage"], "lineage tree of the best candidates",
        "Ancestry of the best candidates, one row per generation (edits from the seed; "
        "migration copies fold into their original); edges carry the change in validation "
        "bpb (negative is better).")}
<h2 id="top">Top candidates</h2>
{_top_table(run)}
<h2 id="lineage">The best lineage, step by step</h2>
{_lineage_steps(run)}
<h2 id="failures">Recent failures</h2>
{_failures(run)}
<h2 id="config">Configuration</h2>
<pre>{_e(run.config_text)}</pre>
</body></html>
"""
