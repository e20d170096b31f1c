"""Running candidates: the Ray-free runner here; the Ray actor and pool in `actor` / `pool`."""

from evolve.workers.runner import RunRequest, RunResult, TemplateError, run_candidate

__all__ = ["RunRequest", "RunResult", "TemplateError", "run_candidate"]
