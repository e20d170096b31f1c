"""The report's figures, drawn with matplotlib's Agg canvas (no display, no global pyplot state).

Sized and lettered for a paper: 7-inch-wide figures, 9-10 pt text, units on every axis.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.transforms import blended_transform_factory

from evolve.inspect.report_data import TOP_IN_TREE, RunSnapshot
from population.candidate import Candidate

BPB_LABEL = "validation bits per byte (lower is better)"
STYLE = {
    "font.size": 9.5, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25, "grid.linewidth": 0.6,
    "savefig.dpi": 200, "pdf.fonttype": 42, "font.family": "DejaVu Sans",
}
KEPT, DISCARDED, CRASHED, BEST, FLOOR = "#1f77b4", "#9a9a9a", "#d62728", "#111111", "#2ca02c"
ISLAND_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
                 "#17becf", "#bcbd22", "#7f7f7f", "#d62728"]
MAX_ANNOTATED = 8


def save(figure: Figure, png: Path) -> Path:
    """Write the figure as PNG (for the page) and PDF (vector, for a paper) side by side."""
    FigureCanvasAgg(figure)
    figure.savefig(png, dpi=200, bbox_inches="tight", facecolor="white")
    figure.savefig(png.with_suffix(".pdf"), bbox_inches="tight", facecolor="white")
    return png


def _short(text: str, width: int = 30, lines: int = 2) -> str:
    wrapped = textwrap.wrap(" ".join(text.split()), width) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: width - 1] + "…"
    return "\n".join(wrapped)


def format_delta(delta: float) -> str:
    """Three decimals, or two significant digits for a gain too small to show in three."""
    return f"{delta:+.3f}" if delta == 0 or abs(delta) >= 0.0005 else f"{delta:+.1e}"


def mark_floor(axes, floor: float | None) -> None:
    """The entropy floor as a dashed line when it lies within the axis (set to the scores
    first); otherwise a labelled arrow at the edge it lies beyond, so the axis is not
    stretched to reach it (which would flatten gains of a few hundredths into one line)."""
    if floor is None:
        return
    bottom, top = axes.get_ylim()
    if bottom <= floor <= top:
        axes.axhline(floor, color=FLOOR, linestyle="--", linewidth=1.2, zorder=1,
                     label=f"entropy floor ({floor:.3f})")
        return
    below = floor < bottom
    edge = blended_transform_factory(axes.transAxes, axes.transAxes)
    y_tip, y_text = (0.0, 0.09) if below else (1.0, 0.91)
    # at the left edge: the scores start high there, so the corner is usually empty
    axes.annotate(f"floor {floor:.3f} {'below' if below else 'above'}", xy=(0.012, y_tip),
                  xycoords=edge, xytext=(0.012, y_text), textcoords=edge, ha="left",
                  va="bottom" if below else "top", fontsize=8, color=FLOOR, zorder=6,
                  gid="entropy-floor",
                  arrowprops={"arrowstyle": "-|>", "color": FLOOR, "linewidth": 1.1})
    axes.plot([], [], color=FLOOR, linestyle="--", linewidth=1.2,
              label=f"entropy floor ({floor:.3f}, off the axis)")


def _empty(figure: Figure, title: str, message: str) -> Figure:
    axes = figure.add_subplot()
    axes.set_axis_off()
    axes.set_title(title)
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes,
              color="#555555")
    return figure


def progress_chart(run: RunSnapshot) -> Figure:
    """val_bpb of every finished experiment in order, kept vs discarded vs crashed, the running
    best as a step line, improvements annotated, the entropy floor when known."""
    with rc_context(STYLE):
        figure = Figure(figsize=(7.2, 4.9), layout="constrained")
        title = f"Search progress: {run.name}"
        scored = [(i, c) for i, c in enumerate(run.experiments, start=1) if c.val_bpb is not None]
        if not scored:
            return _empty(figure, title, "no finished experiment with a score yet")
        axes = figure.add_subplot()
        values = sorted(c.val_bpb for _, c in scored)
        low = values[0]
        top = max(scored[0][1].val_bpb, values[int(0.9 * (len(values) - 1))])
        pad = max(top - low, 1e-3) * 0.08
        ceiling = top + pad
        kept = [(i, c.val_bpb) for i, c in scored if run.kept.get(c.id) and c.val_bpb <= ceiling]
        dropped = [(i, c.val_bpb) for i, c in scored
                   if not run.kept.get(c.id) and c.val_bpb <= ceiling]
        over = [i for i, c in scored if c.val_bpb > ceiling]
        if dropped:
            axes.scatter(*zip(*dropped, strict=True), s=22, facecolors="none",
                         edgecolors=DISCARDED, linewidths=1.0, zorder=2, label="discarded")
        if kept:
            axes.scatter(*zip(*kept, strict=True), s=26, color=KEPT, zorder=3, label="kept")
        if over:
            axes.scatter(over, [ceiling] * len(over), marker="^", s=26, color=DISCARDED,
                         clip_on=False, zorder=3, label="off the scale")
        crashed = [i for i, c in enumerate(run.experiments, start=1) if c.val_bpb is None]
        if crashed:
            rug = blended_transform_factory(axes.transData, axes.transAxes)
            axes.scatter(crashed, [0.025] * len(crashed), transform=rug, marker="x", s=28,
                         color=CRASHED, linewidths=1.3, zorder=3, label="crashed / timed out")
        steps_x, steps_y, improvements = [], [], []
        best = None
        for i, candidate in scored:
            if best is None or candidate.val_bpb < best:
                if best is not None:
                    improvements.append((i, candidate, best - candidate.val_bpb))
                best = candidate.val_bpb
            steps_x.append(i)
            steps_y.append(best)
        last = len(run.experiments)
        axes.step([*steps_x, last], [*steps_y, steps_y[-1]], where="post", color=BEST,
                  linewidth=1.6, zorder=4, label="running best")
        # the axis fits the scores, not the floor: a floor far below would flatten every gain
        room = (ceiling - low) * 0.3 if improvements else 0.0  # where descriptions hang
        bottom = min(low - pad * 1.6, low - room)
        axes.set_ylim(bottom, ceiling + pad * 0.4)
        mark_floor(axes, run.floor)
        axes.set_xlim(0.3, last + 0.7)
        axes.set_xlabel("experiment (in order of completion)")
        axes.set_ylabel(BPB_LABEL)
        axes.set_title(title)
        axes.xaxis.get_major_locator().set_params(integer=True)
        # below the axes: a legend inside would hide points of a long run
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=3, frameon=False)
        _annotate(figure, axes, improvements)
        return figure


def _annotate(figure: Figure, axes, improvements: list[tuple[int, Candidate, float]]) -> None:
    """Label the improving experiments (the largest gains if many) with their descriptions.

    Labels hang below-left of their point: under the running best no experiment can lie, so
    only labels can collide there, and a label that would is pushed further down.
    """
    chosen = sorted(improvements, key=lambda item: item[2], reverse=True)[:MAX_ANNOTATED]
    chosen.sort(key=lambda item: item[0])
    notes = [axes.annotate(
        _short(candidate.description or candidate.id, 26), xy=(i, candidate.val_bpb),
        textcoords="offset points", xytext=(-5, -9), fontsize=8, ha="right", va="top",
        color="#222222", zorder=5,
        arrowprops={"arrowstyle": "-", "color": "#888888", "linewidth": 0.6,
                    "shrinkA": 0, "shrinkB": 2},
        bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "#cccccc",
              "linewidth": 0.5, "alpha": 0.92})
        for i, candidate, _gain in chosen]
    if not notes:
        return
    FigureCanvasAgg(figure)
    figure.draw_without_rendering()  # lay the figure out, so extents are final
    renderer = figure.canvas.get_renderer()
    frame = axes.get_window_extent(renderer)
    points_per_pixel = 72.0 / figure.dpi
    margin = 4.0 / points_per_pixel  # the label's box and a little air

    def extent(note):
        return Text.get_window_extent(note, renderer).expanded(1.0, 1.0).padded(margin)

    # the floor's edge marker is an obstacle too
    placed = [extent(t) for t in axes.texts if t.get_gid() == "entropy-floor"]
    for note in notes:
        for _ in range(30):
            box = extent(note)
            if box.x0 < frame.x0 and note.get_ha() == "right":  # no room on the left
                note.set_ha("left")
                note.xyann = (5, note.xyann[1])
                continue
            hit = [p for p in placed if box.overlaps(p)]
            if not hit:
                break
            drop = (box.y1 - min(p.y0 for p in hit)) * points_per_pixel + 2
            note.xyann = (note.xyann[0], note.xyann[1] - drop)
        placed.append(extent(note))


def island_chart(run: RunSnapshot) -> Figure:
    """Each island's best val_bpb as the run went (migrations included), and the run's best."""
    with rc_context(STYLE):
        figure = Figure(figsize=(7.2, 4.1), layout="constrained")
        title = "Best validation bpb per island"
        if not run.done_with_copies:
            return _empty(figure, title, "no finished experiment with a score yet")
        axes = figure.add_subplot()
        order = {c.id: i for i, c in enumerate(run.experiments, start=1)}
        position = 0
        curves: dict[int, tuple[list[float], list[float]]] = {}
        overall: tuple[list[float], list[float]] = ([], [])
        for candidate in run.done_with_copies:
            # a copy has no experiment number: it arrives after the experiments finished so far
            position = order.get(candidate.id, position)
            xs, ys = curves.setdefault(candidate.island, ([], []))
            if not ys or candidate.val_bpb < ys[-1]:
                xs.append(position)
                ys.append(candidate.val_bpb)
            if not overall[1] or candidate.val_bpb < overall[1][-1]:
                overall[0].append(position)
                overall[1].append(candidate.val_bpb)
        last = max(len(run.experiments), 1)
        for island in sorted(curves):
            xs, ys = curves[island]
            axes.step([*xs, last], [*ys, ys[-1]], where="post", linewidth=1.5,
                      color=ISLAND_COLORS[island % len(ISLAND_COLORS)], label=f"island {island}")
        xs, ys = overall
        axes.step([*xs, last], [*ys, ys[-1]], where="post", color=BEST, linewidth=1.0,
                  linestyle=":", label="whole run")
        scores = [y for _, ys in curves.values() for y in ys]  # the curves drawn, no more
        pad = max(max(scores) - min(scores), 1e-3)
        axes.set_ylim(min(scores) - 0.15 * pad, max(scores) + 0.08 * pad)
        mark_floor(axes, run.floor)
        axes.set_xlim(0, last + 0.5)
        axes.set_xlabel("experiments finished (whole run)")
        axes.set_ylabel(BPB_LABEL)
        axes.set_title(title)
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False,
                    ncols=min(len(curves) + 2, 5))
        return figure


def lineage_chart(run: RunSnapshot) -> Figure:
    """Who descends from whom among the best candidates, Δval_bpb on each edge; the best
    lineage runs straight down the left, other best candidates branch off it."""
    leaves = run.top[:TOP_IN_TREE]
    if run.best is not None and all(leaf.id != run.best.id for leaf in leaves):
        leaves = [run.best, *leaves[: TOP_IN_TREE - 1]]
    parent_of: dict[str, str | None] = {}
    nodes: dict[str, Candidate] = {}
    for leaf in leaves:
        chain = run.lineage_of(leaf)
        for up, down in zip([None, *chain[:-1]], chain, strict=True):
            nodes[down.id] = down
            parent_of[down.id] = up.id if up else None
    children: dict[str | None, list[str]] = {}
    on_best = {c.id for c in run.best_lineage}
    for cid, pid in parent_of.items():
        children.setdefault(pid, []).append(cid)
    for kids in children.values():  # the best path first, then the better branches
        kids.sort(key=lambda k: (k not in on_best, nodes[k].val_bpb or float("inf")))
    place: dict[str, tuple[float, float]] = {}
    next_column = [0]

    def lay(cid: str, depth: int) -> float:
        kids = children.get(cid, [])
        if not kids:
            x = next_column[0]
            next_column[0] += 1
        else:
            x = min(lay(kid, depth + 1) for kid in kids)
        place[cid] = (x, depth)
        return x

    for root in children.get(None, []):
        lay(root, 0)
    columns = max(next_column[0], 1)
    depth = max((d for _, d in place.values()), default=0) + 1
    with rc_context({**STYLE, "axes.grid": False}):
        figure = Figure(figsize=(max(4.6, 1.2 + 2.7 * columns), 1.3 + 0.85 * depth),
                        layout="constrained")
        title = "Lineage of the best candidates (Δ val_bpb on each edge)"
        if not place:
            return _empty(figure, title, "no finished experiment with a score yet")
        axes = figure.add_subplot()
        for cid, pid in parent_of.items():
            if pid is None:
                continue
            (x0, y0), (x1, y1) = place[pid], place[cid]
            axes.plot([x0, x0, x1, x1], [y0, y0 + 0.45, y0 + 0.45, y1], color="#8a8a8a",
                      linewidth=1.1, zorder=1, solid_joinstyle="round")
            child, parent = nodes[cid], nodes[pid]
            if child.val_bpb is not None and parent.val_bpb is not None:
                delta = child.val_bpb - parent.val_bpb
                axes.text(x1 - 0.05, y0 + 0.72, format_delta(delta), ha="right", va="center",
                          fontsize=8, color="#1a7f37" if delta < 0 else CRASHED,
                          fontweight="bold" if cid in on_best else "normal")
        for cid, node in nodes.items():  # a merge: dashed from the donor whose edit it carries
            if node.donor_id in place:
                (x0, y0), (x1, y1) = place[node.donor_id], place[cid]
                axes.plot([x0, x1], [y0, y1], color="#8a8a8a", linewidth=1.0, linestyle="--",
                          zorder=1)
        islands = sorted({n.island for n in nodes.values()})
        for cid, (x, y) in place.items():
            node = nodes[cid]
            is_best = run.best is not None and cid == run.best.id
            axes.scatter([x], [y], s=150 if is_best else 70,
                         color=ISLAND_COLORS[node.island % len(ISLAND_COLORS)],
                         marker="*" if is_best else "o", edgecolors=BEST,
                         linewidths=0.8 if is_best else 0.4, zorder=3)
            score = f"{node.val_bpb:.4f}" if node.val_bpb is not None else node.status.value
            label = f"{score}  ·  {node.id}\n{_short(node.description or 'seed', 34, 1)}"
            axes.text(x + 0.07, y, label, ha="left", va="center", fontsize=7.8,
                      fontweight="bold" if cid in on_best else "normal", zorder=4,
                      linespacing=1.25)
        handles = [Line2D([], [], marker="o", linestyle="", markersize=6.5,
                          markerfacecolor=ISLAND_COLORS[i % len(ISLAND_COLORS)],
                          markeredgecolor=BEST, markeredgewidth=0.4, label=f"island {i}")
                   for i in islands]
        handles.append(Line2D([], [], marker="*", linestyle="", markersize=10,
                              markerfacecolor="white", markeredgecolor=BEST, label="run's best"))
        axes.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.0), ncols=len(handles),
                    frameon=False, fontsize=8, handletextpad=0.3, columnspacing=1.0)
        axes.set_xlim(-0.3, columns - 0.05)
        axes.set_ylim(depth - 0.4, -0.6)
        axes.set_yticks(range(depth))
        axes.set_ylabel("generation (edits from the seed)")
        axes.set_xticks([])
        for side in ("top", "right", "bottom"):
            axes.spines[side].set_visible(False)
        axes.set_title(title, pad=22)
        return figure
