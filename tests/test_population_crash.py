"""A writer killed with SIGKILL mid-run leaves a store that reopens whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from population.candidate import Status
from population.store import Store

REPO = Path(__file__).resolve().parent.parent

WRITER = textwrap.dedent("""
    import sys
    from population.candidate import Candidate, Status
    from population.store import Store

    store = Store.open(sys.argv[1])
    i = 0
    while True:
        cid = f"c{i}"
        store.add(Candidate(id=cid, parent_id=f"c{i - 1}" if i else None, island=i % 2,
                            generation=i, files={"train.py": "X = %d\\n" % i + "#" * 25_000}))
        store.set_status(cid, Status.RUNNING)
        attempt = store.start_attempt(cid, worker="w", node="n", device="cpu")
        store.finish_attempt(attempt, outcome="done")
        store.record_result(cid, status=Status.DONE, metrics={"val_bpb": 10.0 - i * 1e-3})
        print(cid, flush=True)
        i += 1
""")


def test_store_survives_sigkill_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    reported = []
    try:
        for line in writer.stdout:
            reported.append(line.strip())
            if len(reported) == 30:
                break
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert len(reported) == 30, "the writer died before writing anything"

    with Store.open(path) as store:  # the writer lock died with the writer
        # a raw integrity check of the database file itself
        assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for cid in reported:  # every write the writer saw committed is there
            candidate = store.get(cid)
            assert candidate.status is Status.DONE
            assert [a.outcome for a in store.attempts(cid)] == ["done"]
        assert store.count() >= len(reported)
        # at most the one candidate in flight at the kill is unfinished; it can be resumed
        assert len(store.unfinished()) <= 1
        last = store.finished_in_order()[-1]
        assert [c.id for c in store.lineage(last.id)][0] == "c0"
        store.add(store.get("c0").replace(id="after", status=Status.PROPOSED,
                                          files={"train.py": "Y = 1\n"}))
        assert store.get("after").status is Status.PROPOSED
