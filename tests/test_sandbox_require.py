"""`workers.sandbox: require | warn` in the runner: real harness subprocesses, the real jail probe.

A node without a working sandbox is one where the jail finds no bubblewrap: no `bwrap` on
PATH and the wheel's switched off (EVOLVE_BWRAP_WHEEL=0, the switch the jail honours). The
probe's answer is cached per PATH and switch, so each test sees its own node.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import pytest
from sleep_requests import REPO, SEED, TEMPLATE, request
from test_worker_refusal import path_without

from evolve.config import ConfigError, config_from_dict
from evolve.workers.jail_check import NO_JAIL, NOT_REPORTED, jail_problem
from evolve.workers.runner import TemplateError, experiment_dir, run_candidate

MARKER = """
import pathlib as _pl
_pl.Path({marker!r}).write_text("started")
"""


def jailed_template(tmp_path: Path, sandboxed: object = None) -> Path:
    """The stand-in template with the real jail beside it; its result reports `sandboxed`
    as the fixture's SANDBOXED constant says (None: silent, a harness from before the jail)."""
    template = tmp_path / "template"
    shutil.copytree(TEMPLATE, template)
    for jail in (REPO / "train_template").glob("jail*.py"):
        shutil.copy(jail, template / jail.name)
    prepare = template / "prepare.py"
    prepare.write_text(prepare.read_text().replace("SANDBOXED = None", f"SANDBOXED = {sandboxed!r}"))
    return template


def no_bubblewrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process becomes a node without bubblewrap (every other program still found)."""
    monkeypatch.setenv("PATH", path_without(tmp_path, "bwrap"))
    monkeypatch.setenv("EVOLVE_BWRAP_WHEEL", "0")


def started(tmp_path: Path, sandbox: str, template: Path, **kw):
    marker = tmp_path / f"started-{sandbox}"
    return marker, request(tmp_path, SEED + MARKER.format(marker=str(marker)),
                           template_dir=str(template), sandbox=sandbox, network="allow", **kw)


def test_require_refuses_before_anything_starts_where_the_jail_cannot_run(tmp_path, monkeypatch):
    no_bubblewrap(tmp_path, monkeypatch)
    marker, req = started(tmp_path, "require", jailed_template(tmp_path, True))
    with pytest.raises(TemplateError) as refused:
        run_candidate(req)
    reason = str(refused.value)
    assert reason.startswith("sandbox required (workers.sandbox: require) but unavailable on "
                             f"node {platform.node()}: no bubblewrap")
    assert "workers.sandbox: warn" in reason  # what the user can do about it
    assert not experiment_dir(req).exists() and not marker.exists()


def test_require_refuses_a_template_without_a_jail(tmp_path):
    marker, req = started(tmp_path, "require", TEMPLATE)
    with pytest.raises(TemplateError, match="workers.sandbox: require") as refused:
        run_candidate(req)
    assert NO_JAIL in str(refused.value)
    assert not experiment_dir(req).exists() and not marker.exists()


@pytest.mark.parametrize("harness_says", [None, True])  # silent; or claims a jail the node lacks
def test_warn_runs_and_marks_the_score_with_the_nodes_reason(tmp_path, monkeypatch, harness_says):
    no_bubblewrap(tmp_path, monkeypatch)
    marker, req = started(tmp_path, "warn", jailed_template(tmp_path, harness_says))
    result = run_candidate(req)
    assert result.outcome == "done", result.reason
    assert result.metrics["sandboxed"] is False
    assert result.metrics["sandbox_problem"].startswith("no bubblewrap: no bwrap on PATH")
    log = Path(result.log_path).read_text().splitlines()
    assert log[1].startswith("sandbox: NOT available (no bubblewrap") and marker.exists()


def test_a_harness_that_says_nothing_about_the_sandbox_is_marked_unsandboxed(tmp_path):
    template = jailed_template(tmp_path)  # the jail may work here; the harness never said
    result = run_candidate(started(tmp_path, "warn", template)[1])
    assert result.outcome == "done", result.reason
    problem = jail_problem(template)
    assert result.metrics["sandboxed"] is False
    assert result.metrics["sandbox_problem"] == (problem or NOT_REPORTED)


def test_require_runs_where_the_jail_works_and_the_harness_used_it(tmp_path):
    template = jailed_template(tmp_path, True)
    marker, req = started(tmp_path, "require", template)
    problem = jail_problem(template)
    if problem:  # a CI box without user namespaces: refused, for the reason the probe found
        with pytest.raises(TemplateError, match="workers.sandbox: require") as refused:
            run_candidate(req)
        assert problem in str(refused.value) and not marker.exists()
        return
    result = run_candidate(req)
    assert result.outcome == "done", result.reason
    assert result.metrics["sandboxed"] is True and "sandbox_problem" not in result.metrics
    assert Path(result.log_path).read_text().splitlines()[1] == (
        "sandbox: the harness's jail works on this node (workers.sandbox: require)")


def test_require_refuses_the_score_of_a_run_the_harness_did_not_jail(tmp_path):
    template = jailed_template(tmp_path, "the referee could not start bwrap")
    problem = jail_problem(template)
    with pytest.raises(TemplateError) as refused:
        run_candidate(started(tmp_path, "require", template)[1])
    if problem:  # refused before the run, for the probe's reason (a box without the jail)
        assert problem in str(refused.value)
        return
    assert "ran the candidate unsandboxed" in str(refused.value)
    assert "the referee could not start bwrap" in str(refused.value)


def test_the_config_accepts_warn_and_require_and_names_the_choices_otherwise():
    base = {"name": "t", "template": str(TEMPLATE)}
    assert config_from_dict(base).workers.sandbox == "warn"
    assert config_from_dict({**base, "workers": {"sandbox": "require"}}).workers.sandbox == "require"
    with pytest.raises(ConfigError) as bad:
        config_from_dict({**base, "workers": {"sandbox": "off"}})
    assert "require" in str(bad.value) and "warn" in str(bad.value)
