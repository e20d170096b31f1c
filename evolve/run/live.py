"""The live display of a run: one rich panel, redrawn as events arrive, and plain lines when
the output is not a terminal (CI logs, `nohup`), so a long run leaves a readable log."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from population.candidate import Candidate, Status


def _fmt_elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


class LiveDisplay:
    """Shows finished/budget, running, best so far (id, val_bpb, description), crashes, spend."""

    def __init__(self, console: Console | None = None, *, title: str = "evolve",
                 line_every_s: float = 10.0) -> None:
        self.console = console or Console()
        self.title = title
        self.line_every_s = line_every_s
        self._snapshot: Any = None
        self._live: Live | None = None
        self._last_line = 0.0
        self._noticed = 0  # notices (refused workers, network warnings) already printed

    def __enter__(self) -> LiveDisplay:
        if self.console.is_terminal:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4,
                              transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(*exc)
            self._live = None
        elif self._snapshot is not None:
            self.console.print(self._line(), soft_wrap=True)

    def on_progress(self, snapshot: Any) -> None:
        self._snapshot = snapshot
        notices = tuple(getattr(snapshot, "notices", ()))
        for message in notices[self._noticed:]:  # once each, above the panel / in the log
            self.console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True,
                               highlight=False)
        self._noticed = max(self._noticed, len(notices))
        if self._live is not None:
            self._live.update(self._render())
            return
        now = time.monotonic()
        if now - self._last_line >= self.line_every_s:
            self._last_line = now
            self.console.print(self._line(), soft_wrap=True)

    def on_result(self, candidate: Candidate, kept: bool) -> None:
        """One line per finished experiment, above the panel."""
        if candidate.status is Status.DONE and candidate.val_bpb is not None:
            verdict = "[green]keep[/green]" if kept else "discard"
            # the reason is said once per node (a warning above); here only the mark
            score = f"{candidate.val_bpb:.6f}" + (" (unsandboxed)" if candidate.unsandboxed else "")
        else:
            verdict, score = f"[red]{candidate.status.value}[/red]", "—"
        text = candidate.description or candidate.reason or "(seed)"
        self.console.print(f"{candidate.id:>10}  island {candidate.island}  {score}  {verdict}  "
                           f"{text[:90]}", soft_wrap=True)

    def _line(self) -> str:
        s = self._snapshot
        budget = f"/{s.budget}" if s.budget else ""
        best = f"{s.best_val_bpb:.6f} ({s.best_id})" if s.best_val_bpb is not None else "—"
        return (f"[{_fmt_elapsed(s.elapsed_s)}] finished {s.finished}{budget}  running {s.running}"
                f"  best {best}  crashes {s.crashes}  rejected {s.rejected}"
                + (f"  σ {s.noise_sigma:.5f}" if getattr(s, "noise_sigma", None) is not None else "")
                + (f"  confirming {s.held}" if getattr(s, "held", 0) else "")
                + f"  llm ${s.llm_usd:.2f}" + (f"  stopping: {s.stopping}" if s.stopping else ""))

    def _render(self) -> Table:
        table = Table(title=self.title, show_header=False, title_justify="left", expand=False)
        table.add_column(style="bold")
        table.add_column()
        s = self._snapshot
        if s is None:
            table.add_row("status", "starting…")
            return table
        table.add_row("finished", f"{s.finished}" + (f" / {s.budget}" if s.budget else ""))
        table.add_row("workers", f"{s.running} running of {s.workers}  "
                                 f"({s.ready} ready, {s.proposing} being proposed)")
        if s.best_val_bpb is not None:
            table.add_row("best", f"{s.best_val_bpb:.6f}  {s.best_id}  {s.best_description[:70]}")
        else:
            table.add_row("best", "— (baseline running)")
        table.add_row("crashes / rejected", f"{s.crashes} / {s.rejected}")
        sigma = getattr(s, "noise_sigma", None)
        if sigma is not None or getattr(s, "held", 0):
            table.add_row("seed noise", ("—" if sigma is None else f"σ {sigma:.6f} of val_bpb")
                          + (f"  ({s.held} results being confirmed)" if s.held else ""))
        table.add_row("elapsed", _fmt_elapsed(s.elapsed_s))
        table.add_row("LLM spend", f"${s.llm_usd:.2f}")
        notices = tuple(getattr(s, "notices", ()))
        if notices:
            table.add_row("warnings", f"{len(notices)} (printed above; `evolve status` lists them)")
        if s.stopping:
            table.add_row("stopping", str(s.stopping))
        return table
