"""`evolve`: run, resume, status, export, report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

EXIT_USAGE = 2


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from evolve.run.app import Run

    run = Run.create(args.config, args.set or [])
    console.print(f"run directory: [bold]{run.run_dir.path}[/bold]")
    return _execute(run, args, console)


def _cmd_resume(args: argparse.Namespace, console: Console) -> int:
    from evolve.run.app import BudgetSpent, Run

    try:
        run = Run.resume(args.run_dir, args.set or [])
    except BudgetSpent as exc:  # said at once, before Ray starts
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.set:
        console.print(f"config changed: {', '.join(args.set)} (recorded in "
                      f"{run.run_dir.config_path})", highlight=False, markup=False)
    console.print(f"resuming [bold]{run.run_dir.path}[/bold]")
    return _execute(run, args, console)


def _execute(run, args: argparse.Namespace, console: Console) -> int:
    from evolve.run.app import extend_hint
    from evolve.run.live import LiveDisplay

    with LiveDisplay(console, title=f"evolve · {run.config.name}") as display:
        reason = run.execute(address=args.address, display=display)
    console.print(f"stopped: {reason}")
    console.print(f"results: {run.run_dir.tsv_path}")
    hint = extend_hint(reason, run.config)
    more = f" {hint}  (raise the budget: it was reached)" if hint else ""
    console.print(f"go on with: evolve resume {run.run_dir.path}{more}", highlight=False,
                  markup=False, soft_wrap=True)
    return 0


def _cmd_status(args: argparse.Namespace, console: Console) -> int:
    from evolve.config import load_config
    from evolve.inspect.status import render_status
    from evolve.run.rundir import RunDir

    run_dir = RunDir.open(args.run_dir)
    config = load_config(run_dir.config_path)
    render_status(run_dir, console, islands=config.population.islands,
                  population_size=config.population.size, show_test=args.test)
    return 0


def _cmd_export(args: argparse.Namespace, console: Console) -> int:
    from evolve.inspect.export import export_run

    summary = export_run(Path(args.run_dir), Path(args.to), candidate=args.candidate,
                         fmt=args.format, force=args.force)
    console.print(summary.describe())
    return 0


def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    from evolve.inspect.report import build_report

    paths = build_report(Path(args.run_dir), Path(args.out) if args.out else None)
    console.print(f"report: {paths.html}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evolve", description="Evolutionary population search over ML training scripts.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start a run from a YAML config")
    run.add_argument("config", help="the run's YAML config, e.g. configs/default.yaml")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a config key, e.g. --set population.size=16 (repeatable)")
    run.add_argument("--address", help="Ray cluster to attach to ('auto', or host:port); "
                                       "default: the config's ray.address, RAY_ADDRESS, else a local Ray")
    run.set_defaults(handler=_cmd_run)

    resume = sub.add_parser("resume", help="continue a stopped or killed run")
    resume.add_argument("run_dir")
    resume.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="change a key of the run's stored config, e.g. "
                             "--set budget.max_experiments=40 (repeatable; written back to "
                             "RUN_DIR/config.yaml; keys its results depend on, such as profile, data, "
                             "template, mutable_files, seed, population.islands, cannot change)")
    resume.add_argument("--address", help="Ray cluster to attach to (as for run)")
    resume.set_defaults(handler=_cmd_resume)

    status = sub.add_parser("status", help="population per island and the best lineage")
    status.add_argument("run_dir")
    status.add_argument("--test", action="store_true",
                        help="show the best lineage's held-out test scores (scored in every "
                             "run, never shown to the search)")
    status.set_defaults(handler=_cmd_status)

    export = sub.add_parser("export", help="export a candidate's lineage as git history, "
                                           "patches or a runnable directory")
    export.add_argument("run_dir")
    export.add_argument("--candidate", default="best", help="candidate id (or prefix), or 'best'")
    export.add_argument("--to", required=True, help="target directory (must be new or empty)")
    export.add_argument("--format", choices=("git", "patches", "dir"), default="git")
    export.add_argument("--force", action="store_true",
                        help="export a crashed or unfinished candidate anyway")
    export.set_defaults(handler=_cmd_export)

    report = sub.add_parser("report", help="charts and an HTML page of a run")
    report.add_argument("run_dir")
    report.add_argument("--out", help="output directory (default RUN_DIR/report)")
    report.set_defaults(handler=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Errors the user can act on are printed as one line, without a traceback."""
    from evolve.config import ConfigError
    from evolve.guard.datahash import DataMismatch
    from evolve.inspect.export import ExportError
    from evolve.inspect.report import ReportError
    from evolve.run.rundir import RunDirError
    from population.store import StoreError

    args = build_parser().parse_args(argv)
    console = Console()
    try:
        return args.handler(args, console)
    except (ConfigError, RunDirError, ExportError, ReportError, DataMismatch, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
