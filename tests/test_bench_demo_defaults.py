"""The demo defaults benchmark (benchmarks/bench_demo_defaults.py) in small: two variants of
the embedded demo over two run seeds on cpu-micro through the trusted runner give a row each,
with a finite fresh-seed quality and the verdict table; a second invocation runs nothing, and
one after a lost row re-makes only that row, from the cache. The trusted runner is refused for
a variant with an operator that is not ours, as is a resume onto rows of another config.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_demo_defaults as demo  # noqa: E402

SMALL = ["--profile", "cpu-micro", "--experiments", "6", "--seeds", "0", "1", "--cores", "2",
         "--variants", "today", "parallel-greedy"]


def rows(out: Path) -> dict[tuple[str, int], dict]:
    return {(r["variant"], r["seed"]): r for r in demo.load_rows(out)}


def test_rows_verdict_and_resume(tmp_path, capsys):
    out = tmp_path / "out"
    demo.main([*SMALL, "--out", str(out)])
    first = rows(out)
    assert set(first) == {(v, s) for v in ("today", "parallel-greedy") for s in (0, 1)}
    for row in first.values():
        assert math.isfinite(row["quality"]) and 0 < row["quality"] < 10
        assert row["experiments"] == 6 and row["rounds"] == 3  # 2 workers: 6 runs in 3 rounds
        assert row["runner"] == "trusted"
        config = yaml.safe_load((Path(row["run_dir"]) / "config.yaml").read_text())
        assert config["profile"] == "cpu-micro" and config["workers"]["count"] == 2
        assert config["test"]["final"] is False and config["noise"]["seeds"] == 1
        greedy = row["variant"] == "parallel-greedy"
        assert (config["selection"]["strategy"] == "greedy") is greedy  # the variant applied
        assert config["population"]["islands"] == (1 if greedy else 2)
    assert sum(r["cache"]["misses"] for r in first.values()) >= 6 * 2  # real trainings
    table = capsys.readouterr().out
    assert "| today | benchmarks/demo_today.yaml | 2 |" in table
    assert "median lower than today's" in table and "(baseline)" in table
    assert set(demo.verdicts(out)) == {"parallel-greedy"}
    assert (out / "summary.md").read_text().strip() == demo.summarise(out).strip()

    demo.main([*SMALL, "--out", str(out)])  # all done: nothing runs, nothing is rewritten
    assert capsys.readouterr().out.count("done before, skipped") == 4
    assert rows(out) == first

    (out / "parallel-greedy-s1.json").unlink()  # interrupted before this row was written
    demo.main([*SMALL, "--out", str(out)])
    assert capsys.readouterr().out.count("done before, skipped") == 3
    again = rows(out)
    redone = again[("parallel-greedy", 1)]
    assert redone["cache"]["misses"] == 0 and redone["cache"]["hits"] >= 6  # from the cache
    assert redone["quality"] == first[("parallel-greedy", 1)]["quality"]
    assert redone["pick"] == first[("parallel-greedy", 1)]["pick"]


def test_refusals_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    llm = "llm=mutation.operators=[{kind: llm, weight: 1.0, model: claude-sonnet-5-5}]"
    with pytest.raises(SystemExit, match=r"operator\(s\) llm: use --runner harness"):
        demo.main([*SMALL, "--variant", llm, "--variants", "today", "llm", "--out", str(out)])
    assert not list(out.glob("*.json"))
    with pytest.raises(SystemExit, match="not an override"):
        demo.main([*SMALL, "--variant", "bad=population.size", "--out", str(out)])
    with pytest.raises(SystemExit, match="unknown variant"):
        demo.main([*SMALL, "--variants", "nonesuch", "--out", str(out)])
    out.mkdir()
    (out / "today-s0.json").write_text(json.dumps({
        "variant": "today", "seed": 0, "quality": 3.0,
        "spec": demo.spec_of("today", demo.VARIANTS, "cpu-tiny", 20)}))
    with pytest.raises(SystemExit, match="today-s0.json was run with .*delete it"):
        demo.main([*SMALL, "--out", str(out)])  # cpu-micro onto a cpu-tiny row: refused


def test_a_variant_from_the_command_line():
    name, (config, overrides) = demo.parse_variant(
        "pg-la0=configs/default.yaml; selection.strategy=greedy ;mutation.lookahead=0")
    assert name == "pg-la0" and config == REPO / "configs" / "default.yaml"
    assert overrides == ["selection.strategy=greedy", "mutation.lookahead=0"]
    name, (config, overrides) = demo.parse_variant("x=population.size=2")
    assert config == demo.TODAY and overrides == ["population.size=2"]
    with pytest.raises(ValueError, match="config file .* not found"):
        demo.parse_variant("x=nowhere.yaml")
