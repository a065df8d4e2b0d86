"""The sandbox contains what untrusted programs try, and the code scorer grades through it."""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
import time

import pytest

from lookahead_router.collection.code_scorer import CodeScorer, extract_code, humaneval_program
from lookahead_router.collection.sandbox import Limits, network_isolated, run_many, run_program
from lookahead_router.collection.tasks import Task

FAST = Limits(timeout_s=5.0, test_timeout_s=2.0)


@pytest.fixture(params=["namespaces", "hook only"])
def isolation(request, monkeypatch):
    """Run a test with the user/network/PID namespaces (where this kernel allows them) and without
    them, as on a kernel that refuses unshare: the audit hook alone must still contain the program."""
    from lookahead_router.collection import sandbox
    if request.param == "hook only":
        monkeypatch.setattr(sandbox, "_unshare_prefix", lambda: ())
    return request.param


def _session_members(sid: int, wait_s: float = 2.0) -> list[int]:
    """Live (not zombie) processes whose session id is ``sid``, after up to ``wait_s`` for the
    kernel to finish tearing a killed PID namespace down."""
    deadline = time.monotonic() + wait_s
    while True:
        out = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    state, _, _, session = fh.read().rsplit(")", 1)[1].split()[:4]
            except (OSError, ValueError):
                continue
            if int(session) == sid and state not in "ZX":
                out.append(int(pid))
        if not out or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def test_normal_program_passes():
    r = run_program("def f(x):\n    return 2 * x\nprint('hello')", ["assert f(2) == 4", "assert f(3) == 6"], FAST)
    assert (r.status, r.tests, r.kind, r.pass_rate) == ("passed", ["passed", "passed"], "pass", 1.0)
    assert r.stdout == "hello\n" and r.returncode == 0


def test_demo_block_does_not_run_and_tests_share_globals():
    r = run_program("x = 1\nif __name__ == '__main__':\n    raise SystemExit(3)", ["x += 1", "assert x == 2"], FAST)
    assert r.tests == ["passed", "passed"]


def test_per_test_outcomes_and_mbpp_classification():
    r = run_program("def f(x):\n    return x", ["assert f(1) == 1", "assert f(1) == 2", "assert g(1)", "1 / 0"], FAST)
    assert r.tests == ["passed", "failed: AssertionError", "failed: name 'g' is not defined",
                       "failed: division by zero"]
    assert r.kinds == ["pass", "wrong_answer", "failed", "failed"]
    assert (r.status, r.kind, r.pass_rate) == ("failed", "wrong_answer", 0.25)
    assert run_program("raise ValueError('bad')", ["assert True"], FAST).tests == ["failed: bad"]
    assert run_program("def f(:", [], FAST).kind == "failed"


def test_a_test_timing_out_while_others_pass():
    limits = Limits(timeout_s=8.0, test_timeout_s=0.5)
    r = run_program("def f(x):\n    return x", ["assert f(1) == 1", "while True:\n    pass", "assert f(2) == 2"], limits)
    assert r.tests == ["passed", "timed out", "passed"]
    assert r.kinds == ["pass", "timeout", "pass"] and r.kind == "timeout" and r.status == "failed"
    assert r.duration_s < 4


def test_infinite_loop_killed_at_wall_timeout():
    # A program that swallows the per-test alarm; only the wall clock stops it.
    prog = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"
    r = run_program(prog, ["assert True"], Limits(timeout_s=1.5, test_timeout_s=60))
    assert (r.status, r.tests, r.kind) == ("timeout", ["timed out"], "timeout")
    assert 1.4 < r.duration_s < 5
    assert _session_members(r.pid) == []


def test_fork_bomb_is_contained(isolation):
    r = run_program("import os\nwhile True:\n    os.fork()", ["assert True"], FAST)
    assert r.status == "failed" and "os.fork" in r.tests[0]
    assert _session_members(r.pid) == []
    spawn = run_program("import multiprocessing as mp\np = mp.get_context('spawn').Process(target=print)\n"
                        "p.start()", [], FAST)
    assert spawn.status == "failed" and "fork_exec" in spawn.tests[0]
    shell = run_program("import subprocess\nsubprocess.run(['true'])", [], FAST)
    assert shell.status == "failed" and "subprocess.Popen" in shell.tests[0]
    assert run_program("pass", [], FAST).passed   # the machine is fine


def test_huge_allocation_fails_cleanly():
    r = run_program("x = bytearray(50 * 2**30)", ["assert True"], FAST)
    assert (r.status, r.tests, r.kind) == ("failed", ["failed: MemoryError"], "failed")


def test_write_outside_is_refused(tmp_path, isolation):
    target = tmp_path / "owned.txt"
    r = run_program(f"open({str(target)!r}, 'w').write('pwned')", [], FAST)
    assert r.status == "failed" and "sandbox: open not allowed" in r.tests[0]
    assert not target.exists()
    victim = tmp_path / "keep.txt"
    victim.write_text("data")
    r = run_program(f"import os\nos.remove({str(victim)!r})", [], FAST)
    assert r.status == "failed" and victim.read_text() == "data"
    # Inside the sandbox directory writing is fine, and it is gone afterwards.
    r = run_program("import os\nopen('a.txt', 'w').write('x')\nos.makedirs('d/e')\nprint(os.getcwd())", [], FAST)
    assert r.passed and not os.path.exists(r.stdout.strip())


def test_read_outside_does_not_leak(tmp_path, isolation):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-42")
    r = run_program(f"print(open({str(secret)!r}).read())", [], FAST)
    assert r.status == "failed" and "TOP-SECRET-42" not in r.stdout + r.stderr + r.tests[0]
    link = run_program(f"import os\nos.symlink({str(secret)!r}, 'link')\nprint(open('link').read())", [], FAST)
    assert link.status == "failed" and "TOP-SECRET-42" not in link.stdout


def test_network_attempt_reaches_nothing(isolation):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    port, seen, stop = server.getsockname()[1], [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                seen.append(server.accept())
            except OSError:
                continue
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        prog = (f"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
                f"s.settimeout(1)\ns.connect(('127.0.0.1', {port}))\ns.sendall(b'hi')")
        r = run_program(prog, [], FAST)
        lookup = run_program(f"import urllib.request\nurllib.request.urlopen('http://localhost:{port}/')", [], FAST)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(2)
        server.close()
    assert r.status == "failed" and "socket" in r.tests[0]
    assert lookup.status == "failed"
    assert seen == []


def test_infinite_printing_is_bounded():
    r = run_program("while True:\n    print('x' * 1000)", [], Limits(timeout_s=10, test_timeout_s=8, file_size_mb=1))
    assert r.status == "failed" and "File too large" in r.tests[0]
    assert len(r.stdout) <= 2000 and r.duration_s < 8


def test_network_namespace_is_used_when_available():
    if not network_isolated():
        pytest.skip("unshare is not usable on this kernel")
    r = run_program("import os\nprint(os.getpid())", [], FAST)
    assert r.passed and r.stdout.strip() == "1"   # PID namespace: the runner is its init


@pytest.mark.skipif(importlib.util.find_spec("numpy") is None, reason="numpy is not installed")
def test_numpy_and_common_stdlib_work_inside():
    prog = ("import numpy as np, asyncio, json, re, tempfile, logging, zoneinfo, collections\n"
            "x = int(np.arange(10).sum())\nasyncio.run(asyncio.sleep(0))\nzoneinfo.ZoneInfo('UTC')\n"
            "with tempfile.NamedTemporaryFile('w') as fh:\n    fh.write('x')")
    r = run_program(prog, ["assert x == 45"], FAST)
    assert r.tests == ["passed"], r.stderr


def test_run_many_keeps_input_order():
    jobs = [(f"v = {i}", [f"assert v == {i}", "assert v != 1"]) for i in range(4)]
    results = run_many(jobs, FAST, workers=2, progress=False)
    assert [r.tests for r in results] == [["passed", "passed"], ["passed", "failed: AssertionError"],
                                           ["passed", "passed"], ["passed", "passed"]]


def test_extract_code():
    assert extract_code("Here:\n```python\ndef f():\n    return 1\n```\nDone.") == "def f():\n    return 1\n"
    assert extract_code("def f():\n    return 1") == "def f():\n    return 1"
    two = "```\nC = n * 2\n```\nthen\n```python\ndef g():\n    pass\n```"
    assert extract_code(two) == "C = n * 2\n"          # the first block, as the release did
    assert extract_code("[BEGIN]\n 'def h(): return 3' \n[DONE]") == "def h(): return 3"
    assert extract_code("Cut off:\n```python\ndef k():\n    return 4\n# and") == "def k():\n    return 4\n# and"
    spaced = "``` python\nx = 1\n```\ntext"          # not a fence for the release either
    assert extract_code(spaced) == spaced


def test_humaneval_program_prepends_prompt():
    prog = humaneval_program("def add(a, b):\n", "    return a + b\n", "def check(c):\n    assert c(1, 2) == 3", "add")
    assert prog == "def add(a, b):\n    return a + b\n\ndef check(c):\n    assert c(1, 2) == 3\ncheck(add)"


def test_code_scorer_on_tasks():
    msg = [{"role": "user", "content": "x"}]
    listed = Task("m1", "Write f", msg, tests=["assert f(1) == 2", "assert f(2) == 4", "assert f(3) == 7"])
    he = Task("h1", "def add(a, b):\n    \"\"\"Add.\"\"\"\n", msg, tests="def check(c):\n    assert c(2, 3) == 5",
              entry_point="add")
    single = Task("s1", "Write g", msg, tests="assert g() == 'ok'")
    scorer = CodeScorer(FAST, workers=2)
    assert scorer.applies(listed) and not scorer.applies(Task("t", "p", msg))
    scores = scorer.score([(listed, "```python\ndef f(x):\n    return 2 * x\n```"),
                           (he, "    return a + b\n"),
                           (he, "```python\ndef add(a, b):\n    return a - b\n```"),
                           (single, " def g():\n    return 'ok'"),
                           (listed, "no code here")], progress=False)
    assert [s.value for s in scores] == [pytest.approx(2 / 3), 1.0, 0.0, 1.0, 0.0]
    assert scores[0].detail == "failed: AssertionError"
    assert scores[0].extra["tests"] == ["passed", "passed", "failed: AssertionError"]
    assert scores[4].detail.startswith("failed: invalid syntax")
