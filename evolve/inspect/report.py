"""`evolve report`: pictures of a run and one self-contained HTML page with the diffs.

The run is only read (safe while it goes on); the output goes to `RUN_DIR/report/` unless
told otherwise, and a report made again replaces the files of the one before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evolve.inspect.report_charts import island_chart, lineage_chart, progress_chart, save
from evolve.inspect.report_data import read_run
from evolve.inspect.report_html import render_html
from evolve.inspect.runview import RunViewError
from evolve.run.rundir import write_atomic


class ReportError(Exception):
    """A report that cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class ReportPaths:
    """The files a report wrote (each PNG also has a PDF twin beside it, for papers)."""

    out_dir: Path
    html: Path
    progress: Path
    lineage: Path
    islands: Path

    @property
    def pdfs(self) -> tuple[Path, ...]:
        return tuple(p.with_suffix(".pdf") for p in (self.progress, self.lineage, self.islands))


def build_report(run_dir: Path, out: Path | None = None) -> ReportPaths:
    """Draw the charts and write report.html for the run at `run_dir`."""
    try:
        run = read_run(Path(run_dir))
    except RunViewError as error:
        raise ReportError(str(error)) from error
    out_dir = Path(out) if out is not None else Path(run_dir) / "report"
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"{out_dir} exists and is not a directory; pass --out with a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ReportError(f"cannot create the report folder {out_dir}: {error}") from error
    paths = ReportPaths(out_dir, out_dir / "report.html", out_dir / "progress.png",
                        out_dir / "lineage.png", out_dir / "islands.png")
    save(progress_chart(run), paths.progress)
    save(lineage_chart(run), paths.lineage)
    save(island_chart(run), paths.islands)
    html = render_html(run, {"progress": paths.progress, "lineage": paths.lineage,
                             "islands": paths.islands})
    write_atomic(paths.html, html)
    return paths
