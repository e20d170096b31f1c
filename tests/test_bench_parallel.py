"""The parallel strategy benchmark's machinery: P virtual workers driven through the real
controller are deterministic whatever the cores (the same store on 1 and 2 cores), the result
cache hits on a repeat, gossip copies every new best to every island, and a one-minute smoke
version of the benchmark produces its table (stand-in harness; the full one trains for hours).
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_parallel as bench  # noqa: E402
from test_merge_e2e import bowl_template  # noqa: E402
from virtual_executor import ResultCache  # noqa: E402

from population.store import Store  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "sleep_template"


@pytest.fixture
def uneven(tmp_path: Path) -> Path:
    """The stand-in template, its runs taking 0.1-1.0 s of real time depending on the
    candidate's constants: real completion order then differs from the virtual order, more so
    on two cores than on one."""
    template = tmp_path / "uneven"
    shutil.copytree(FIXTURE, template)
    train = template / "train_cpu.py"
    text = train.read_text()
    assert "    time.sleep(SLEEP_S)\n" in text
    train.write_text(text.replace("    time.sleep(SLEEP_S)\n", (
        "    spread = sum(ord(ch) for ch in repr(sorted((k, v) for k, v in globals().items()\n"
        "                                               if k.isupper())))\n"
        "    time.sleep(0.1 + 0.15 * (spread % 7))\n")))
    return template


def dump(run_dir: Path) -> dict[str, list]:
    """Every table of a run's store, rows in order (the run directory's name aside)."""
    conn = sqlite3.connect(run_dir / "store.sqlite")
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}
    finally:
        conn.close()


def test_the_same_seed_gives_the_same_store_on_one_and_two_cores(tmp_path, uneven):
    stores = []
    for cores in (1, 2):
        run = bench.search("population+merge", 4, 3, 14, tmp_path / f"c{cores}", cores, None,
                           profile="cpu-micro", template=str(uneven))
        stores.append(dump(run))
    one, two = stores
    assert one.keys() == two.keys()
    for table in one:
        assert one[table] == two[table], f"table {table} differs between 1 and 2 cores"
    assert len(one["attempts"]) >= 14  # a real run: every experiment and its attempt
    assert {row[2] for row in one["attempts"]} >= {"v0", "v1", "v2", "v3"}  # four workers


def test_the_trusted_runner_gives_the_same_store_on_one_and_two_cores(tmp_path):
    """The real template through the benchmark's trusted runner (real trainings, whose times
    differ with each child's model): still one store for the seed, whatever the cores."""
    from trusted_runner import TrustedRunner

    stores = []
    for cores in (1, 2):
        with TrustedRunner(cores) as runner:
            cache = ResultCache(tmp_path / f"cache{cores}", runner.name)
            run = bench.search("parallel-greedy+merge", 3, 4, 12, tmp_path / f"t{cores}", cores,
                               cache, profile="cpu-micro", runner=runner)
        assert cache.misses >= 12 and cache.hits == 0
        stores.append(dump(run))
    one, two = stores
    for table in one:
        assert one[table] == two[table], f"table {table} differs between 1 and 2 cores"
    finished = [row for row in one["attempts"] if row[2] in ("v0", "v1", "v2")]
    assert len(finished) >= 12


def test_a_repeat_is_served_by_the_cache_and_stores_the_same(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    first = bench.search("parallel-greedy", 2, 1, 6, tmp_path / "a", 2, cache,
                         profile="cpu-micro", template=str(FIXTURE))
    assert cache.hits == 0 and cache.misses >= 6
    again = ResultCache(tmp_path / "cache")
    second = bench.search("parallel-greedy", 2, 1, 6, tmp_path / "b", 2, again,
                          profile="cpu-micro", template=str(FIXTURE))
    assert again.misses == 0 and again.hits == cache.misses and again.hit_rate == 1.0
    assert dump(first) == dump(second)


def test_smoke_benchmark_table(tmp_path):
    template = bowl_template(tmp_path)  # most moves win or lose: the table has some life
    rows = [bench.run_one("one-agent", 1, 0, tmp_path, 2, experiments=6, profile="cpu-micro",
                          template=str(template)),
            bench.run_one("gossip-greedy", 3, 2, tmp_path, 2, experiments=9,
                          profile="cpu-micro", template=str(template)),
            bench.run_one("parallel-greedy+merge", 2, 0, tmp_path, 2, experiments=8,
                          profile="cpu-micro", template=str(template))]
    agent, gossip, merge = rows
    assert agent["rounds"] == 6 and len(agent["curve"]) == 6  # one worker: a round a run
    # every worker busy from the first round (children of the root run beside it): 9 / 3, 8 / 2
    assert gossip["rounds"] == 3
    assert merge["rounds"] == 4
    for row in rows:  # every pick judged on the fresh seeds' test split
        assert set(row["curve"]) <= set(row["quality"]) and row["at_equal"] in row["quality"]
        assert all(q < float("inf") for q in row["quality"].values())
        assert 0.0 <= row["from_best"] <= 1.0
    with Store.open(Path(gossip["run_dir"]) / "store.sqlite", readonly=True) as store:
        best = store.best()
        assert best.id != "root"
        copies = {c.island for c in store.finished_in_order(include_copies=True)
                  if c.source_hash == best.source_hash}
        assert copies == {0, 1, 2}  # gossip: the new best went to every island at once
    table = bench.summarise(tmp_path)
    assert table.startswith("Target (one-agent median quality at 48 experiments")
    assert "| gossip-greedy | 3 | 1 |" in table and "| parallel-greedy+merge | 2 | 1 |" in table
    assert "cache hits (hit rate" in table
