"""The budget rules, stated once (population/budget.py): the live core and `evolve resume`
decide "reached" by the same functions, so a run the core stopped is one resume refuses."""

from __future__ import annotations

from test_controller_core import finish_root, of, start

from evolve.controller.core import ProposalReady, Propose, ResultArrived, Run, Stop
from population.budget import Budget, exhausted, experiments_reached, hours_reached, usd_reached


def test_each_limit_is_reached_at_its_bound_and_none_means_no_limit():
    assert experiments_reached(5, 5) and not experiments_reached(4, 5)
    assert not experiments_reached(10**9, None)
    assert hours_reached(3600.0, 1.0) and not hours_reached(3599.9, 1.0)
    assert usd_reached(1.0, 1.0) and not usd_reached(0.99, 1.0) and not usd_reached(9e9, None)


def test_resume_names_the_first_budget_reached_with_what_was_used():
    budget = Budget(max_experiments=4, max_hours=1.0, target_val_bpb=0.8, max_llm_usd=2.0)
    room = dict(finished=3, elapsed_s=10.0, best_val_bpb=0.9, llm_usd=1.0)
    assert exhausted(budget, **room) is None
    assert exhausted(budget, **{**room, "finished": 4}) == "max_experiments reached (4 of 4)"
    assert exhausted(budget, **{**room, "elapsed_s": 5400.0}) == \
        "max_hours reached (1.50 h of 1 h)"
    assert exhausted(budget, **{**room, "best_val_bpb": 0.75}) == \
        "target_val_bpb reached (0.750000 <= 0.8)"
    assert exhausted(budget, **{**room, "llm_usd": 2.5}) == "max_llm_usd reached ($2.50 of $2)"
    assert exhausted(Budget(), finished=10**6, elapsed_s=1e9, best_val_bpb=0.0, llm_usd=1e9) \
        is None


def test_the_core_stops_where_resume_would_refuse():
    core, out = start(1, max_experiments=3, lookahead=1)
    out = finish_root(core, out)
    finished, n = 1, 0
    pending = of(Propose, out)
    while not of(Stop, out):
        proposal = pending.pop(0)
        n += 1
        out = core.handle(ProposalReady(ticket=proposal.ticket, candidate_id=f"c{n}", now=10.0 + n))
        pending += of(Propose, out)
        (run,) = of(Run, out)
        out = core.handle(ResultArrived(candidate_id=run.candidate_id, worker_id=run.worker_id,
                                        outcome="done", val_bpb=1.0, now=11.0 + n))
        pending += of(Propose, out)
        finished += 1
    assert of(Stop, out) == [Stop("max_experiments reached (3)")]
    assert exhausted(Budget(max_experiments=3), finished=finished, elapsed_s=0.0,
                     best_val_bpb=1.0, llm_usd=0.0) == "max_experiments reached (3 of 3)"
