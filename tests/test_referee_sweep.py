"""The referee's end-of-run sweep kills what the experiment left running, and nothing that was
below its process before it became the referee (a caller's own children, such as a Ray head).

Real processes: a driver script becomes the referee in a fresh interpreter, as prepare.py does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "train_template"

DRIVER = """
import json, os, subprocess, sys, time
sys.path.insert(0, {template!r})
import roles

def alive(pid):
    try:
        state = open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"

before = subprocess.Popen(["sleep", "60"])   # the caller's own child (a Ray head, say)
roles.become_referee()
# what an experiment leaves: a child, and a double-forked daemon that left its parent
child = subprocess.Popen(["sleep", "60"])
daemon = subprocess.run([sys.executable, "-c",
    "import subprocess; p = subprocess.Popen(['sleep', '60'], start_new_session=True, "
    "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)"],
    capture_output=True, text=True).stdout.strip()
time.sleep(0.2)
roles.sweep()
print(json.dumps({{"before": alive(before.pid), "child": alive(child.pid),
                  "daemon": alive(int(daemon))}}))
before.kill()
"""


def test_the_sweep_kills_the_experiments_processes_and_spares_what_came_before(tmp_path):
    done = subprocess.run([sys.executable, "-c", DRIVER.format(template=str(TEMPLATE))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"before": True, "child": False, "daemon": False}
