"""`evolve report`: charts and the HTML page from a real store, checked in a real browser."""

from __future__ import annotations

import base64
import dataclasses
import re
import shutil

import numpy as np
import pytest
from matplotlib.image import imread
from report_browser import INSTALL_HINT, chromium, dump_dom, screenshot
from run_builder import FLOOR, build_run

from evolve.inspect.report import ReportError, build_report
from evolve.inspect.report_charts import island_chart, lineage_chart, progress_chart
from evolve.inspect.report_data import read_run
from evolve.run.rundir import RunDir
from population.candidate import Candidate, Status
from population.store import Store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    built, _ = build_run(tmp_path_factory.mktemp("rep"))
    return built


@pytest.fixture(scope="module")
def report(run):
    return build_report(run.path)


def test_report_writes_charts_and_a_self_contained_page(run, report):
    assert report.out_dir == run.path / "report"
    for png in (report.progress, report.lineage, report.islands):
        assert png.read_bytes().startswith(PNG_MAGIC)
        height, width = imread(png).shape[:2]
        assert width > 900 and height > 500  # 200 dpi, paper-sized
    assert all(pdf.read_bytes().startswith(b"%PDF") for pdf in report.pdfs)
    page = report.html.read_text()
    images = [base64.b64decode(data) for data in DATA_URI.findall(page)]
    assert images == [report.progress.read_bytes(), report.islands.read_bytes(),
                      report.lineage.read_bytes()]
    # nothing to fetch: no scripts, stylesheets or images from elsewhere
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert "<script" not in page


def test_page_holds_config_top_table_and_escaped_lineage_diffs(run, report):
    page = report.html.read_text()
    assert "profile: cpu-micro" in page and "migration_interval: 4" in page
    for role in ("best", "c", "b", "a", "root", "side", "worse"):
        assert run.ids[role] in page
    assert "Raise the matrix LR &lt;x10&gt; &amp; see" in page and "<x10>" not in page
    # each step of the best lineage shows its description, metrics and diff
    for title in ("Step 1: Deepen to 4 blocks", "Step 2: Raise the Muon LR to 0.03",
                  "Step 3: Switch the MLP to SwiGLU", "Step 4: Add a 5% warmup"):
        assert title in page
    assert '<span class="del">-DEPTH = 2            # transformer blocks</span>' in page
    assert '<span class="add">+DEPTH = 4            # transformer blocks</span>' in page
    assert '<span class="add">+ACTIVATION = &quot;swiglu&quot;</span>' in page
    assert "val_bpb 2.1000 → <b>1.9000</b>" in page and "test_bpb 1.5700" in page
    assert "RuntimeError: shape mismatch in attention" in page  # failures table


def test_progress_chart_holds_every_experiment_and_the_running_best(run):
    snapshot = read_run(run.path)
    assert len(snapshot.experiments) == 10  # copies are not experiments; rejected never ran
    assert snapshot.kept[run.ids["worse"]] is False and snapshot.kept[run.ids["b"]] is True
    axes = progress_chart(snapshot).axes[0]
    labels = {t.get_label() for t in axes.get_lines() + list(axes.collections)}
    assert {"kept", "discarded", "crashed / timed out", "running best"} <= labels
    # the floor (1.25) lies below the fitted axis: an arrow at the edge, not a stretched axis
    assert axes.get_ylim()[0] > FLOOR
    assert [t.get_text() for t in axes.texts if t.get_gid() == "entropy-floor"] == [
        f"floor {FLOOR:.3f} below"]
    best = next(line for line in axes.get_lines() if line.get_label() == "running best")
    assert min(best.get_ydata()) == 1.55 and best.get_ydata()[0] == 2.10
    notes = [t.get_text().replace("\n", " ") for t in axes.texts if t.get_gid() is None]
    assert notes == ["Deepen to 4 blocks", "Raise the Muon LR to 0.03",
                     "Switch the MLP to SwiGLU", "Add a 5% warmup"]


def _ylim(figure) -> tuple[float, float]:
    return figure.axes[0].get_ylim()


@pytest.mark.parametrize("chart", [progress_chart, island_chart])
def test_val_bpb_axes_fit_the_scores_and_mark_a_distant_floor_at_the_edge(run, chart):
    """A floor far below (as the synthetic data's 0.965 under scores near 1.0 and gains of
    0.06) must not flatten the curve: the axis spans about the scores, the floor is a label."""
    snapshot = read_run(run.path)
    scores = [c.val_bpb for c in snapshot.done_with_copies]
    span = max(scores) - min(scores)
    for floor, side in ((0.5, "below"), (9.0, "above")):
        axes = chart(dataclasses.replace(snapshot, floor=floor)).axes[0]
        bottom, top = axes.get_ylim()
        assert bottom >= min(scores) - 0.5 * span and top <= max(scores) + 0.2 * span
        assert bottom < min(scores) and top >= 2.10  # every drawn best inside
        marks = [t.get_text() for t in axes.texts if t.get_gid() == "entropy-floor"]
        assert marks == [f"floor {floor:.3f} {side}"]
        assert not [line for line in axes.get_lines() if line.get_label().startswith(
            "entropy floor") and len(line.get_ydata())]
    # a floor within the scores is the dashed line, and the axis is not moved for it
    axes = chart(dataclasses.replace(snapshot, floor=1.8)).axes[0]
    floor = [line for line in axes.get_lines() if line.get_label().startswith("entropy floor")]
    assert floor and floor[0].get_ydata()[0] == 1.8
    assert not [t for t in axes.texts if t.get_gid() == "entropy-floor"]
    no_floor = chart(dataclasses.replace(snapshot, floor=None)).axes[0].get_ylim()
    assert axes.get_ylim() == pytest.approx(no_floor)


def test_lineage_tree_puts_the_best_path_on_one_trunk(run):
    snapshot = read_run(run.path)
    axes = lineage_chart(snapshot).axes[0]
    texts = [t.get_text() for t in axes.texts]
    for delta in ("-0.200", "-0.180", "-0.110", "-0.060", "+0.030"):
        assert delta in texts
    labels = [t for t in texts if "·" in t]
    assert any(run.ids["best"] in t and "Add a 5% warmup" in t for t in labels)
    assert not any(run.ids["moved"] in t for t in labels)  # copies fold into their original


def test_report_on_a_live_run_with_nothing_scored_yet(tmp_path):
    run_dir = RunDir.create(tmp_path / "results", "fresh")
    run_dir.config_path.write_text("template: train_template\nprofile: cpu-micro\n")
    with Store.open(run_dir.store_path) as store:  # the writer stays open, as in a live run
        store.add(Candidate(id="seed0", parent_id=None, island=0, generation=0,
                            files={"train.py": "X = 1\n"}, description="seed"))
        store.set_status("seed0", Status.RUNNING)
        paths = build_report(run_dir.path, tmp_path / "out")
        page = paths.html.read_text()
    assert "Run in progress" in page and "No best candidate yet" in page
    assert paths.progress.read_bytes().startswith(PNG_MAGIC)


def test_report_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(ReportError, match="not a run directory"):
        build_report(tmp_path)
    with pytest.raises(ReportError, match="no such run directory"):
        build_report(tmp_path / "missing")


def _has_color(image: np.ndarray, hex_color: str, tolerance: int = 6) -> int:
    rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    pixels = (image[..., :3] * 255).astype(int)
    return int((np.abs(pixels - rgb).max(axis=-1) <= tolerance).sum())


def test_page_renders_in_headless_chromium(report, tmp_path):
    binary = chromium()
    if binary is None:
        pytest.skip(INSTALL_HINT)
    page = tmp_path / "report.html"  # a copy far from the run: nothing else is needed to view it
    shutil.copy(report.html, page)
    dom = dump_dom(binary, page, tmp_path / "profile-dom")
    images = [base64.b64decode(data) for data in DATA_URI.findall(dom)]
    assert len(images) == 3 and all(img.startswith(PNG_MAGIC) for img in images)
    assert dom.count('class="add"') >= 5 and dom.count('class="del"') >= 5
    assert "Step 4: Add a 5% warmup" in dom
    shot = screenshot(binary, page, tmp_path / "profile-shot", tmp_path / "shot.png", "1280,4200")
    image = imread(shot)
    assert image.shape[1] == 1280
    # the charts were drawn (their marker and island colours) and the diffs coloured
    assert _has_color(image, "#1f77b4") > 200     # kept points, island 0
    assert _has_color(image, "#ff7f0e") > 100     # island 1 curve
    assert _has_color(image, "#e6ffec", 2) > 2000  # added lines' background
    assert _has_color(image, "#ffebe9", 2) > 2000  # removed lines' background


def test_kept_flags_come_from_results_tsv_or_are_judged_by_rank(tmp_path):
    built, _ = build_run(tmp_path)
    logged = read_run(built.path).kept
    tsv = built.path / "results.tsv"
    lines = tsv.read_text().splitlines(keepends=True)
    # a live run between the store's commit and the tsv append: the last rows are missing
    tsv.write_text("".join(line for line in lines if built.ids["after"] not in line
                           and built.ids["worse"] not in line))
    judged = read_run(built.path).kept
    assert logged[built.ids["after"]] is False  # as the test run logged it
    # by rank with population 2: island 0 then held 1.72 and 1.90, so 1.75 made the cut;
    # island 1 held only the seed's copy, so even 2.40 had a free place
    assert judged[built.ids["after"]] is True and judged[built.ids["worse"]] is True
    missing = (built.ids["after"], built.ids["worse"])
    assert {k: v for k, v in judged.items() if k not in missing} == \
        {k: v for k, v in logged.items() if k not in missing}
