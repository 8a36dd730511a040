"""The code sandbox: honest programs pass, hostile ones fail and change nothing outside.

The hostile suite runs end to end through `asynctg code` against a loopback provider that
answers every request with the attack; the property test throws hostile child behaviours at
``CodeRunner.run``, which must never raise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import random
import shutil
import struct
import sys
import sysconfig
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from honest_programs import PROGRAMS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asynctg import apps, tasks
from asynctg.errors import ConfigError, SandboxUnavailableError
from asynctg.runs import _seccomp, sandbox
from asynctg.runs.sandbox import Isolation, probe_isolation

REPO = Path(__file__).resolve().parents[1]


def _need_bubblewrap() -> None:
    """Skip only where bwrap is absent and CI is unset; anywhere else it must work."""
    if shutil.which("bwrap") is None and not os.environ.get("CI"):
        pytest.skip("bubblewrap (`bwrap`) is not installed: apt-get install bubblewrap")
    probe_isolation()


@pytest.fixture(autouse=True)
def _bubblewrap() -> None:
    _need_bubblewrap()


# --- honest programs --------------------------------------------------------------------------


async def test_reports_passes_and_failures() -> None:
    """Passing tests pass; a wrong value and an exception are explained per test."""
    run = await apps.run_tests(
        "def f(x):\n    print('noise')\n    return x + 1\n",
        ["assert f(1) == 2", "assert f(2) == 4", "assert g(1) == 1"],
    )
    assert run.passed == (True, False, False)
    assert run.outcomes[1].message == "the code returned 3, expected 4"
    assert "NameError" in run.outcomes[2].message
    assert "**Tests the code passed:**\nassert f(1) == 2" in run.feedback()
    assert run.isolation.startswith("bubblewrap ")


async def test_test_shapes_are_judged_like_python() -> None:
    """Comparisons, truth tests, statements, non-literal expected sides and plain containers
    are judged as Python would, from plain values compared in the parent."""
    code = (
        "import collections\n"
        "def f(x):\n    return x + 1\n"
        "def pair():\n    return (1, [2.5, None], {'a': {1, 2}}, b'x')\n"
        "def counts():\n    return collections.Counter('aab')\n"
        "def nan():\n    return float('nan')\n"
        "def big():\n    return 10 ** 30\n"
    )
    tests = [
        "assert f(1) != 3",
        "assert f(1) in (2, 3)",
        "assert f(1) < 1",
        "assert f(1)",
        "assert not f(-1)",
        "x = f(3)",
        "assert f(1) == len('ab')",
        "assert pair() == (1, [2.5, None], {'a': {1, 2}}, b'x')",
        "assert pair() == [1, [2.5, None], {'a': {1, 2}}, b'x']",
        "assert counts() == {'a': 2, 'b': 1}",
        "assert nan() != nan()",
        "assert big() == 1000000000000000000000000000000",
        "assert f(1) is None",
        "assert f(1) ==",
    ]
    run = await apps.run_tests(code, tests)
    assert run.passed == (
        True, True, False, True, True, True, True, True, False, True, True, True, False, False
    )  # fmt: skip
    assert run.outcomes[2].message == "the code returned 2; the test needs it < 1"
    assert "does not compile" in run.outcomes[-1].message


async def test_kills_hangs_and_caps_memory() -> None:
    """A loop hits the per-test alarm; a hang that blocks the alarm is killed with the whole
    sandbox; a huge allocation fails inside the memory cap."""
    runner = apps.CodeRunner(per_test_seconds=0.3, startup_seconds=1.0, memory_mb=256)
    looping = await runner.run("def f():\n    while True:\n        pass\n", ["assert f()"])
    assert "no result within 0.3 s" in looping.outcomes[0].message
    stuck = await runner.run(
        "import signal, time\nsignal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])\n"
        "def f():\n    time.sleep(60)\n",
        ["assert f()", "assert f() == 1"],
    )
    assert stuck.timed_out and not any(stuck.passed)
    assert "run was stopped" in stuck.outcomes[1].message
    big = await runner.run("def f():\n    return len(bytearray(2 << 30))\n", ["assert f() > 0"])
    assert "out of memory" in big.outcomes[0].message


async def test_feedback_is_size_bounded() -> None:
    """Thousands of failing tests with long values still give a report of bounded size."""
    tests = [f"assert f({i}) == {i}" for i in range(400)]
    run = await apps.run_tests("def f(x):\n    return 'y' * 5000\n", tests)
    assert not any(run.passed)
    text = run.feedback()
    assert len(text) < 9000 and "more" in text


def _honest_cases() -> list[tuple[str, str, tuple[str, ...], tuple[bool, ...]]]:
    problems = {p.task_id: p for p in tasks.python_basics()}
    sample = tasks.load_leetcode(REPO / "tests/data/leetcode_hard_sample.jsonl")
    problems |= {p.task_id: p for p in sample}
    return [
        (task_id, code, problems[task_id].tests, want)
        for task_id, programs in PROGRAMS.items()
        for code, want in programs
    ]


async def test_honest_programs_keep_their_verdicts() -> None:
    """Right and wrong programs for python_basics and the LeetCode-Hard sample pass exactly the
    tests plain Python passes them on (the pass rates of the runner before bubblewrap)."""
    runner = apps.CodeRunner()
    cases = _honest_cases()
    runs = await asyncio.gather(*(runner.run(code, tests) for _, code, tests, _ in cases))
    assert [run.passed for run in runs] == [want for *_, want in cases]
    assert sum(run.all_passed for run in runs) == 10


def test_runner_settings_are_checked() -> None:
    """Bad limits and an unknown isolation are ConfigErrors."""
    with pytest.raises(ConfigError, match="isolation"):
        apps.CodeRunner(isolation="audit-hook")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="memory_mb"):
        apps.CodeRunner(memory_mb=10)
    with pytest.raises(ConfigError, match="per_test_seconds"):
        apps.CodeRunner(per_test_seconds=0)


# --- forged verdicts: the code under test cannot reach the reporting channel -------------------

# Each forgery passes every test of _FORGED_TESTS with a missing or wrong function unless the
# result channel is out of its reach and the parent decides every comparison itself.
_FORGED_TESTS = ["assert f(0) == 0", "assert f(2) == 4", "assert f(3) == 9"]
_FORGERIES = {
    "stack_walk": (  # the harness's payload and result file from the frames above the code
        "import os, sys\n"
        "def _forge():\n"
        "    frame, count, sinks = sys._getframe(), 0, []\n"
        "    while frame is not None:\n"
        "        for v in list(frame.f_locals.values()):\n"
        "            if isinstance(v, dict) and isinstance(v.get('checks'), list):\n"
        "                count = max(count, len(v['checks']))\n"
        "            if hasattr(v, 'write') and hasattr(v, 'flush') and not isinstance(v, type):\n"
        "                sinks.append(v)\n"
        "        frame = frame.f_back\n"
        "    lines = ''.join('{\"i\": %d, \"done\": true}\\n' % i for i in range(count or 3))\n"
        "    for sink in sinks:\n"
        "        try:\n"
        "            sink.write(lines)\n"
        "            sink.flush()\n"
        "        except Exception:\n"
        "            pass\n"
        "    os._exit(0)\n"
        "_forge()\n"
    ),
    "json_dumps": (
        "import json\n"
        "json.dumps = lambda record, **kw: '{\"i\": %d, \"done\": true}' % record['i']\n"
    ),
    "gc_write": (  # every text file's write, the result channel's among them, rewritten
        "import gc, io, json\n"
        "def _fake(real):\n"
        "    def write(text):\n"
        "        if text.strip():\n"
        "            text = json.dumps({'i': json.loads(text)['i'], 'done': True}) + '\\n'\n"
        "        return real(text)\n"
        "    return write\n"
        "for o in gc.get_objects():\n"
        "    if isinstance(o, io.TextIOWrapper):\n"
        "        try:\n"
        "            o.write = _fake(o.write)\n"
        "        except Exception:\n"
        "            pass\n"
    ),
    "main_check": (  # right for f(0) only; the harness's _check answers the rest
        "import __main__\n__main__._check = lambda *args: {'done': True}\ndef f(x):\n    return 0\n"
    ),
    "proc_fds": (  # any descriptor of another sandbox process (bubblewrap's init, the harness)
        "import os\n"
        "lines = b''.join(b'{\"i\": %d, \"done\": true}\\n' % i for i in range(3))\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit() and int(pid) != os.getpid():\n"
        "        try:\n"
        "            fds = os.listdir('/proc/%s/fd' % pid)\n"
        "        except OSError:\n"
        "            continue\n"
        "        for fd in fds:\n"
        "            try:\n"
        "                w = os.open('/proc/%s/fd/%s' % (pid, fd), os.O_WRONLY | os.O_NONBLOCK)\n"
        "                os.write(w, lines)\n"
        "                os.close(w)\n"
        "            except OSError:\n"
        "                pass\n"
        "os._exit(0)\n"
    ),
}


_IN_PROCESS = ["gc_write", "json_dumps", "main_check", "stack_walk"]


@pytest.mark.parametrize(
    ("name", "isolation"),
    [(n, "bubblewrap") for n in [*_IN_PROCESS, "proc_fds"]]
    # never proc_fds without the sandbox: it would write into every process of the host
    + [(n, "unsafe-no-sandbox") for n in _IN_PROCESS],
)
async def test_forged_records_pass_no_comparison(name: str, isolation: Isolation) -> None:
    """Writing done records through the harness's payload and file (stack walk), a replaced
    json.dumps, a patched write found through gc, an overridden __main__._check or another
    sandbox process's descriptors passes none of the tests the function gets wrong; the
    forgeries inside the process void the run, with or without the sandbox."""
    runner = apps.CodeRunner(per_test_seconds=2.0, memory_mb=256, isolation=isolation)
    run = await runner.run(_FORGERIES[name], _FORGED_TESTS)
    assert run.passed[1:] == (False, False), run
    if name in _IN_PROCESS:
        assert all("result channel" in o.message for o in run.outcomes), run


def test_a_forged_done_record_counts_only_for_a_statement() -> None:
    """The parent never reads a done record as a pass of a comparison or a truth test (the run
    is void); it is a statement's only possible result."""
    tests = ["assert f(1) == 2", "assert f(1)", "f(1)"]
    plans = [sandbox._plan(t) for t in tests]
    done = b"".join(b'{"i": %d, "done": true}\n' % i for i in range(3))
    outcomes = sandbox._outcomes(tests, plans, done, "missing")
    assert [o.passed for o in outcomes] == [False, False, False]
    assert "result channel" in outcomes[0].message
    statement_only = sandbox._outcomes(tests[2:], plans[2:], b'{"i": 0, "done": true}\n', "")
    assert [o.passed for o in statement_only] == [True]


async def test_a_literal_on_the_left_stays_in_the_parent_too() -> None:
    """`assert LITERAL OP EXPR` sends only EXPR to the sandbox and compares in the parent, with
    the operands in the test's order."""
    assert sandbox._plan("assert 9 == f(3)").send == {"exprs": ["f(3)"]}
    run = await apps.run_tests(
        "def f(x):\n    return x + 1\n",
        ["assert 2 == f(1)", "assert 3 < f(1)", "assert [2] != f(1)", "assert 2 in f(1)"],
    )
    assert run.passed == (True, False, True, False)
    assert run.outcomes[1].message == "the code returned 2; the test needs 3 < it"
    assert "is not iterable" in run.outcomes[3].message


async def test_forged_done_records_for_a_mix_void_the_statement_too() -> None:
    """A program writing done records for every test (statements among them) fails them all,
    the statement included: the records out of place void the run."""
    runner = apps.CodeRunner(per_test_seconds=2.0, memory_mb=256)
    tests = ["f(1)", "assert f(2) == 4", "assert f(3)"]
    run = await runner.run(_FORGERIES["stack_walk"], tests)
    assert run.passed == (False, False, False), run


# --- resources outside the process limits ----------------------------------------------------


async def test_dev_shm_and_dev_stop_at_a_bound() -> None:
    """Files in /dev/shm stop at a small size (the tmpfs is bounded) and /dev takes none, so a
    program cannot turn the sandbox's /dev into host memory."""
    code = (
        "def fill(folder):\n"
        "    written = 0\n"
        "    try:\n"
        "        for i in range(32):\n"
        "            with open('%s/fill%d' % (folder, i), 'wb') as f:\n"
        "                for _ in range(4):\n"
        "                    f.write(b'x' * (1 << 20))\n"
        "                    f.flush()\n"
        "                    written += 1 << 20\n"
        "    except OSError:\n"
        "        pass\n"
        "    return written\n"
    )
    runner = apps.CodeRunner(per_test_seconds=5.0, memory_mb=256)
    run = await runner.run(
        code, ["assert fill('/dev/shm') <= 16 << 20", "assert fill('/dev') == 0"]
    )
    assert run.passed == (True, True), run


_SYSV_GRAB = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
def grab(mib):
    # segments of 16 MiB, each attached, touched and detached: the address space never holds
    # more than one, so RLIMIT_AS never stops it; the pages stay until the IPC namespace dies
    done = 0
    for _ in range(mib // 16):
        seg = libc.shmget(0, 16 << 20, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
        addr = libc.shmat(seg, None, 0) if seg >= 0 else None
        if addr in (None, ctypes.c_void_p(-1).value):
            break
        ctypes.memset(addr, 1, 16 << 20)
        libc.shmdt(ctypes.c_void_p(addr))
        done += 16
    return done
"""


def _need_root_cgroups() -> None:
    """Skip only where this is not root and CI is unset: only root makes cgroups here."""
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("per-run cgroups are made only when running as root")


def _peak_bytes(folder: Path) -> int:
    for name in ("memory.max_usage_in_bytes", "memory.peak"):  # cgroup v1, v2
        if (folder / name).exists():
            return int((folder / name).read_text())
    raise AssertionError(f"no peak usage file in {folder}")


def _use_box(monkeypatch: pytest.MonkeyPatch, **changes: Any) -> sandbox._Bubblewrap:
    """Make every run of this test use the probed sandbox with ``changes``."""
    box = dataclasses.replace(sandbox._bubblewrap(), **changes)
    monkeypatch.setattr(sandbox, "_bubblewrap", lambda: box)
    return box


async def test_system_v_shared_memory_stops_at_the_runs_memory_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the seccomp filter lifted (the layer below tested alone), System V segments past
    the run's memory bound stop the run with an out-of-memory verdict and never charge more
    than the bound; a program within it passes; no cgroup of the run is left behind."""
    _need_root_cgroups()
    roots = _use_box(monkeypatch, seccomp=_seccomp.filter_program(denied=())).cgroups
    assert roots is not None
    peaks: list[int] = []
    remove = sandbox._Cgroup.remove

    async def measured_remove(self: sandbox._Cgroup) -> None:
        if (memory := getattr(self, "memory", None)) is not None:  # none before the fix
            peaks.append(_peak_bytes(memory))
        await remove(self)

    monkeypatch.setattr(sandbox._Cgroup, "remove", measured_remove)
    runner = apps.CodeRunner(per_test_seconds=10.0, memory_mb=64)
    bound = (64 + 64 + 16 + 64) << 20  # memory_mb, /tmp, /dev/shm, headroom
    greedy = await runner.run(_SYSV_GRAB, ["assert grab(400) == 400", "assert 1 == 1"])
    assert not any(greedy.passed), greedy
    assert "ran out of memory" in greedy.outcomes[0].message, greedy
    # the segments were charged to the run (well past memory_mb), and never past the bound
    assert 128 << 20 < peaks[0] <= bound, peaks
    honest = await runner.run(_SYSV_GRAB, ["assert grab(48) == 48", "assert 1 == 1"])
    assert honest.passed == (True, True), honest
    mine = f"asynctg-{os.getpid()}-*"
    assert [*roots.pids.glob(mine), *roots.memory.glob(mine)] == []


_KERNEL_MEMORY_GRAB = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    ctypes.set_errno(0)
    return getattr(libc, name)(*(ctypes.c_long(a) for a in args)), ctypes.get_errno()
def memfd():
    try:
        os.close(os.memfd_create('grab'))
    except OSError as exc:
        return exc.errno
    return 0
"""
_DENIED_CALLS = [
    "assert call('shmget', 0, 4096, 0o1600) == (-1, 1)",  # IPC_PRIVATE, IPC_CREAT | 0600; EPERM
    "assert call('msgget', 0, 0o1600) == (-1, 1)",
    "assert call('semget', 0, 1, 0o1600) == (-1, 1)",
    "assert memfd() == 1",
]
if os.uname().machine == "x86_64":  # shmget through the x32 ABI: bit 30 of the number
    _DENIED_CALLS.append("assert call('syscall', 29 | 0x40000000, 0, 4096, 0o1600) == (-1, 1)")


@pytest.mark.parametrize("cgroups", ["as-probed", "none"])
async def test_system_v_ipc_and_memfd_are_denied_for_every_user(
    monkeypatch: pytest.MonkeyPatch, cgroups: str
) -> None:
    """shmget, msgget, semget, memfd_create (and x32's shmget) fail with EPERM under the
    sandbox's seccomp filter, with the run's cgroups (root) and without any (a regular user);
    the same program's other tests still pass."""
    if cgroups == "none":
        _use_box(monkeypatch, cgroups=None)
    runner = apps.CodeRunner(per_test_seconds=5.0, memory_mb=256)
    run = await runner.run(_KERNEL_MEMORY_GRAB, [*_DENIED_CALLS, "assert len(str(libc)) > 0"])
    assert all(run.passed), run
    assert run.isolation.endswith("System V IPC and memfd: denied by seccomp)")


def _run_filter(program: bytes, arch: int, nr: int) -> int:
    """What the kernel's classic-BPF interpreter answers for one seccomp_data (nr, arch)."""
    ops = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    data = {0: nr, 4: arch}
    acc, pc = 0, 0
    for _ in range(len(ops)):  # jumps only go forward
        code, jt, jf, k = ops[pc]
        if code == 0x20:  # BPF_LD | BPF_W | BPF_ABS
            acc, pc = data[k], pc + 1
        elif code in (0x15, 0x35):  # BPF_JEQ, BPF_JGE with a constant
            holds = acc == k if code == 0x15 else acc >= k
            pc += 1 + (jt if holds else jf)
        elif code == 0x06:  # BPF_RET | BPF_K
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")
    raise AssertionError("the program ran off its end")


# (AUDIT_ARCH_*, a call that must pass, the kernel's numbers of the denied calls)
_ARCHES = {
    "x86_64": (0xC000003E, 1, {"shmget": 29, "shmat": 30, "shmctl": 31, "msgget": 68,
                               "msgsnd": 69, "semget": 64, "memfd_create": 319}),
    "aarch64": (0xC00000B7, 64, {"shmget": 194, "shmat": 196, "shmctl": 195, "msgget": 186,
                                 "msgsnd": 189, "semget": 190, "memfd_create": 279}),
}  # fmt: skip
_ALLOW, _EPERM = 0x7FFF0000, 0x00050000 | errno.EPERM


@pytest.mark.parametrize("machine", sorted(_ARCHES))
def test_the_seccomp_program_checks_the_arch_first_and_denies_the_list(machine: str) -> None:
    """The filter is whole sock_filter entries, loads the arch first and denies any other ABI,
    answers EPERM for the System V IPC calls and memfd_create (and x32 numbers on x86_64),
    and allows the rest."""
    arch, allowed, denied = _ARCHES[machine]
    program = _seccomp.filter_program(machine)
    x32 = machine == "x86_64"
    # load arch, compare, load nr, [x32], one compare per denied call, allow, deny
    assert len(program) == 8 * (3 + x32 + len(_seccomp.DENIED) + 2)
    assert struct.unpack("=HBBI", program[:8]) == (0x20, 0, 0, 4)  # A = seccomp_data.arch
    assert struct.unpack("=HBBI", program[8:16])[::3] == (0x15, arch)  # A == AUDIT_ARCH_*?
    assert _run_filter(program, arch, allowed) == _ALLOW
    assert _run_filter(program, arch, 0) == _ALLOW
    for name, nr in denied.items():
        assert _run_filter(program, arch, nr) == _EPERM, name
    other = 0x40000003  # AUDIT_ARCH_I386: int 0x80's numbers mean other calls
    assert _run_filter(program, other, allowed) == _EPERM
    assert _run_filter(program, arch, 0x40000000 | denied["shmget"]) == (_EPERM if x32 else _ALLOW)
    lifted = _seccomp.filter_program(machine, denied=())
    assert _run_filter(lifted, arch, denied["shmget"]) == _ALLOW


def test_an_architecture_without_a_syscall_table_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a machine the filter has no table for, the sandbox refuses to run (no unfiltered run)."""
    real = os.uname()
    fake = os.uname_result((real.sysname, real.nodename, real.release, real.version, "riscv64"))
    monkeypatch.setattr(os, "uname", lambda: fake)
    sandbox._bubblewrap.cache_clear()
    try:
        with pytest.raises(SandboxUnavailableError, match="riscv64"):
            asyncio.run(apps.CodeRunner().run("x = 1", ["assert x == 1"]))
    finally:
        monkeypatch.undo()
        sandbox._bubblewrap.cache_clear()


def test_root_without_a_memory_cgroup_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """As root, a pids cgroup without a memory cgroup is refused, not a silently weaker run."""
    monkeypatch.setattr(sandbox, "_pids_cgroup_root", lambda: REPO / "pids")
    monkeypatch.setattr(sandbox, "_memory_cgroup_root", lambda pids: None)
    with pytest.raises(SandboxUnavailableError, match="System V shared memory"):
        sandbox._cgroup_roots()


_P = (1 << 61) - 1  # every multiple hashes to 0


async def test_colliding_results_neither_block_the_loop_nor_time_out_a_neighbour(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A result line of 40k integers that all hash to 0 blocks no event-loop callback for
    100 ms or more (asyncio's own slow-callback count) and an honest program running beside
    it keeps its verdict instead of timing out."""
    numbers = ",".join(str(_P * k) for k in range(1, 40_000))
    line = '{"i": 0, "values": [{"set": [' + numbers + "]}]}\n"
    hostile = (
        "import os\n"
        f"line = {line!r}.encode()\n"
        "for fd in range(0, 12):\n"
        "    try:\n"
        "        os.write(fd, line)\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n"
    )
    honest = "import time\ndef f(x):\n    time.sleep(0.5)\n    return x + 1\n"
    # small enough for the harness to report: it reaches the parent's decoder
    returned = f"def f(x):\n    return {{{_P} * k for k in range(1, 1500)}}\n"
    runner = apps.CodeRunner(per_test_seconds=2.0, startup_seconds=2.0, max_parallel=3)
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.1
    caplog.set_level("WARNING", logger="asyncio")
    try:
        bad, good, colliding = await asyncio.gather(
            runner.run(hostile, ["assert f(1) == {1}"]),
            runner.run(honest, ["assert f(1) == 2"]),
            runner.run(returned, ["assert f(1) == {1}"]),
        )
    finally:
        loop.set_debug(False)
    slow = [r for r in caplog.records if r.name == "asyncio" and "Executing" in r.getMessage()]
    assert slow == []
    assert bad.passed == (False,)
    assert "sharing one hash" in colliding.outcomes[0].message, colliding
    assert good.passed == (True,) and not good.timed_out, good


def test_colliding_elements_are_refused_before_a_set_is_built() -> None:
    """The parent decodes a set whose elements share one hash as a failed test, in linear time,
    instead of building it (40k such elements took seconds of quadratic insertion)."""
    tests = ["assert f(1) == {1}"]
    raw = b'{"i": 0, "values": [{"set": [%s]}]}\n' % b",".join(
        b"%d" % (_P * k) for k in range(1, 40_000)
    )
    (outcome,) = sandbox._outcomes(tests, [sandbox._plan(tests[0])], raw, "missing")
    assert not outcome.passed and "hash" in outcome.message, outcome


# --- the property: run() never raises ------------------------------------------------------------

_HOSTILE = [
    "import os\nos._exit(3)",
    "raise SystemExit(0)",
    "import os\nos.kill(os.getpid(), 9)",
    "import os\nos.write(1, b'x' * 3000000)",
    "import sys\nsys.stdout.write('y' * 100000)",
    "import os\nfor fd in range(3, 12):\n    try:\n"
    '        os.write(fd, b\'{"i": 0, "done": true}\\n\')\n'
    "    except OSError:\n        pass",
    "import os\nfor fd in range(3, 12):\n    try:\n        os.write(fd, b'\\xff\\xfe' * 40000)\n"
    "    except OSError:\n        pass",
    "import os\nfor fd in range(3, 12):\n    try:\n        os.write(fd, b'z' * 2000000)\n"
    "    except OSError:\n        pass",
    "import os\nfor fd in range(0, 12):\n    try:\n        os.close(fd)\n    except OSError:\n"
    "        pass",
    "import sys\nsys.setrecursionlimit(10 ** 6)\ndef r(n):\n    return r(n + 1)\nr(0)",
    "def r(n):\n    return r(n + 1)\nr(0)",
    "class E(Exception):\n    def __str__(self):\n        raise ValueError\nraise E()",
    "class E(BaseException):\n    pass\nraise E()",
    "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass",
    "import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, (3, 3))",
    "x = bytearray(1 << 34)",
    "import os\nfor _ in range(6):\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "import gc\nfor o in gc.get_objects():\n    if isinstance(o, dict) and 'checks' in o:\n"
    "        o['checks'] = o['checks'] * 3",
    "import __main__\n__main__._encode = lambda r: 'garbage'",
    "import __main__\n__main__._plain = lambda *a: {'dict': [[[1], 2]]}",
]
_RETURNS = [
    "return x + 1",
    "return object()",
    "return 10 ** 5000",
    "return [1] * 200000",
    "return {'a': [1, {2, 3}]} ",
    "return float('inf')",
    "return b'\\x00' * 10",
    "l = []\n    l.append(l)\n    return l",
    "import os\n    os._exit(0)",
    "raise KeyError(x)",
    "while True:\n        pass",
    "class A:\n        def __eq__(s, o):\n            return True\n    return A()",
]


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    prelude=st.lists(st.sampled_from(_HOSTILE), max_size=2),
    body=st.sampled_from(_RETURNS),
)
def test_run_never_raises_for_anything_the_child_does(prelude: list[str], body: str) -> None:
    """Exits, kills, floods, forged lines, recursion, closed fds, tampered harness, forks,
    unreportable values and hangs all end as a TestRun with one outcome per test."""
    code = "\n".join(prelude) + f"\ndef f(x):\n    {body}\n"
    tests = ["assert f(1) == 2", "assert f(2)", "y = f(3)", "assert f(1) == f(0) + 1"]
    runner = apps.CodeRunner(per_test_seconds=0.5, startup_seconds=2.0, memory_mb=256)
    run = asyncio.run(runner.run(code, tests))
    assert len(run.outcomes) == len(tests)
    assert [o.test for o in run.outcomes] == tests
    if body != "return x + 1":  # a wrong or hostile function never passes every test
        assert not run.all_passed, run
    elif not prelude:
        assert run.all_passed, run
    assert len(run.feedback()) < 9000


# --- hostile programs, end to end through `asynctg code` -----------------------------------------


class _Scene:
    """Host-side bait the attacks aim at, and how to tell whether any attack landed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.canary = f"sk-canary-{random.getrandbits(64):016x}"
        self.home = root / "home"
        self.home.mkdir()
        self.home_secret = f"home-secret-{random.getrandbits(64):016x}"
        (self.home / ".netrc").write_text(self.home_secret)
        self.victim = root / "victim.txt"
        self.victim.write_text("keep me")
        self.site = Path(sysconfig.get_paths()["purelib"])
        self.pth = self.site / f"asynctg_pwn_{random.getrandbits(32):08x}.pth"
        self.outside = root / "outside-write.txt"
        self.spawned = root / "spawned.txt"
        self.orphan_mark = f"{random.randint(10**6, 10**7)}.25"
        self.secret_expected = random.randint(10**8, 10**9)
        self.unix_path = root / "listener.sock"
        self.connections: list[str] = []

    def program(self, name: str, tcp_port: int) -> str:
        p = {
            "pth": str(self.pth),
            "victim": str(self.victim),
            "outside": str(self.outside),
            "spawned": str(self.spawned),
            "home": str(self.home / ".netrc"),
            "readme": str(REPO / "README.md"),
            "unix": str(self.unix_path),
            "port": tcp_port,
            "mark": self.orphan_mark,
        }
        return _ATTACKS[name].format(**p)

    def problems(self) -> list[dict[str, Any]]:
        rows = []
        for name in _ATTACKS:
            expected = self.secret_expected if name.startswith("forge") else "'ESCAPED'"
            rows.append(
                {
                    "task_id": name,
                    "prompt": f"HOSTILE-{name}-END\ndef attack():\n    ...",
                    "test": [f"assert attack() == {expected}"],
                }
            )
        return rows


# Each attack returns "ESCAPED" only if it got out (its test expects "ESCAPED"); otherwise it
# returns what it saw, which then travels into the feedback, the prompts and the report, so a
# leaked secret would show up there.
_ATTACKS: dict[str, str] = {
    "symlink_pth": """
import os
def attack():
    os.symlink({pth!r}, 'link.pth')
    with open('link.pth', 'w') as f:
        f.write('# planted\\n')
    return 'ESCAPED'
""",
    "pth_direct": """
def attack():
    with open({pth!r}, 'w') as f:
        f.write('# planted\\n')
    return 'ESCAPED'
""",
    "hardlink": """
import os
def attack():
    os.link({victim!r}, 'hard')
    with open('hard', 'a') as f:
        f.write('pwned')
    return 'ESCAPED'
""",
    "proc_environ": """
import os
def attack():
    seen = []
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            try:
                seen.append(open('/proc/%s/environ' % pid, 'rb').read().decode(errors='replace'))
            except OSError as exc:
                seen.append(str(exc))
    return 'ESCAPED' if 'OPENAI_API_KEY' in ' '.join(seen) else ' | '.join(seen)[:2000]
""",
    "read_home_and_checkout": """
def attack():
    got = []
    for path in ({home!r}, {readme!r}, '/root/.bashrc', '/etc/passwd'):
        try:
            got.append(open(path).read()[:500])
        except OSError as exc:
            got.append(type(exc).__name__)
    return 'ESCAPED' if any(len(g) > 40 for g in got) else repr(got)
""",
    "remove_outside": """
import os
def attack():
    done = []
    for op in (lambda: os.remove({victim!r}), lambda: os.rename({victim!r}, {outside!r}),
               lambda: os.chmod({victim!r}, 0), lambda: os.truncate({victim!r}, 0),
               lambda: os.mkdir({outside!r}), lambda: open({outside!r}, 'w').write('x')):
        try:
            op()
            done.append(1)
        except OSError:
            pass
    return 'ESCAPED' if done else 'refused'
""",
    "spawn_and_fork_exec": """
import multiprocessing, os, subprocess
def child(path):
    open(path, 'w').write('spawned')
def attack():
    out = []
    try:
        p = multiprocessing.get_context("spawn").Process(
            target=os.system, args=("echo x > " + {spawned!r},))
        p.start(); p.join(5)
        out.append(p.exitcode)
    except Exception as exc:
        out.append(type(exc).__name__)
    try:
        out.append(subprocess.run(['/bin/sh', '-c', 'echo x > ' + {spawned!r}]).returncode)
    except Exception as exc:
        out.append(type(exc).__name__)
    return repr(out)
""",
    "tcp_socket": """
import socket
def attack():
    try:
        socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hello')
        return 'ESCAPED'
    except OSError as exc:
        return type(exc).__name__
""",
    "unix_socket": """
import socket
def attack():
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect({unix!r}); s.sendall(b'hello')
        return 'ESCAPED'
    except OSError as exc:
        return type(exc).__name__
""",
    "kill_parent": """
import os, signal
def attack():
    for pid in [os.getppid()] + list(range(1, 300)):
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    try:
        fd = os.pidfd_open(1)
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        pass
    return 'survived'
""",
    "raise_rlimits": """
import resource
def attack():
    raised = []
    for which in (resource.RLIMIT_AS, resource.RLIMIT_NPROC, resource.RLIMIT_CPU,
                  resource.RLIMIT_FSIZE):
        try:
            resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            raised.append(which)
        except (ValueError, OSError):
            pass
    return 'ESCAPED' if raised else 'refused'
""",
    "fork_bomb": """
import os
def attack():
    n = 0
    while n < 100000:
        try:
            os.fork()
            n += 1
        except OSError:
            pass
    return 'ESCAPED'
""",
    "memory_bomb": """
def attack():
    hog = []
    while True:
        hog.append(bytearray(50 << 20))
""",
    "disk_fill": """
def attack():
    written = 0
    try:
        for i in range(1000):
            with open('/tmp/fill%d' % i, 'wb') as f:
                for _ in range(64):
                    f.write(b'x' * (1 << 20)); written += 1 << 20
    except OSError:
        pass
    return 'ESCAPED' if written > 200 << 20 else written
""",
    "output_flood": """
import os, sys
def attack():
    for fd in range(1, 10):
        try:
            os.write(fd, b'flood' * 400000)
        except OSError:
            pass
    while True:
        sys.stdout.write('x' * 100000)
""",
    "double_fork_orphan": """
import os
def attack():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv('/bin/sleep', ['/bin/sleep', {mark!r}])
        os._exit(0)
    return 'forked'
""",
    "forge_equal_everything": """
class Anything:
    def __eq__(self, other):
        return True
    __ne__ = lambda self, other: False
    __hash__ = object.__hash__
def attack():
    return Anything()
""",
    "forge_channel": """
import gc, os, sys
def attack():
    guesses = set()
    for o in gc.get_objects():
        if isinstance(o, str) and o.isdigit() and 8 <= len(o) <= 10:
            guesses.add(int(o))
        if isinstance(o, int) and 10 ** 8 <= o < 10 ** 9:
            guesses.add(o)
    frame = sys._getframe()
    while frame is not None:
        for v in list(frame.f_locals.values()):
            if isinstance(v, int) and 10 ** 8 <= v < 10 ** 9:
                guesses.add(v)
        frame = frame.f_back
    for fd in range(0, 12):
        for g in sorted(guesses)[:20] or [0]:
            try:
                os.write(fd, ('{{"i": 0, "values": [%d]}}\\n' % g).encode())
                os.write(fd, b'{{"i": 0, "done": true}}\\n')
            except OSError:
                pass
    os._exit(0)
""",
    "forge_tamper_harness": """
import __main__
def attack():
    __main__._plain = lambda value, depth, count: 0
    __main__._tripwire = lambda workdir: None
    return 1
""",
}


# the forgeries inside the harness's process, end to end (each once passed its hidden test)
_ATTACKS |= {
    f"forge_{name}": _FORGERIES[name].replace("{", "{{").replace("}", "}}")
    for name in ("gc_write", "json_dumps", "stack_walk")
}


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[_Scene]:
    s = _Scene(tmp_path)
    yield s
    if s.pth.exists():  # never expected; but never leave a .pth behind in the test venv
        s.pth.unlink()


@pytest.fixture
async def hostile_provider(scene: _Scene) -> AsyncIterator[tuple[str, list[str], list[str]]]:
    """An OpenAI-compatible endpoint answering every request with the attack it names, a TCP
    listener and a Unix-socket listener that record any connection."""
    bodies: list[str] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        scene.connections.append("connection")
        writer.close()

    tcp = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    unix = await asyncio.start_unix_server(on_conn, str(scene.unix_path))
    tcp_port = tcp.sockets[0].getsockname()[1]

    async def chat(request: web.Request) -> web.Response:
        raw = await request.text()
        bodies.append(raw)
        text = json.dumps(json.loads(raw)["messages"])
        name = next((n for n in _ATTACKS if f"HOSTILE-{n}-END" in text), "fork_bomb")
        code = scene.program(name, tcp_port)
        reply = f"<IMPROVED_VARIABLE>\n```python\n{code}\n```\n</IMPROVED_VARIABLE>"
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "model": "hostile",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            }
        )

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1", bodies, scene.connections
    finally:
        await runner.cleanup()
        tcp.close()
        unix.close()
        await tcp.wait_closed()
        await unix.wait_closed()


def _processes_with(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _leftover_dirs(tmpdir: Path, pid: int) -> set[str]:
    """The run folders left in the child's own TMPDIR and the pids and memory cgroups named after
    the child (other test processes on the machine make their own: not counted)."""
    temp = {p.name for p in tmpdir.glob("asynctg-run-*")}
    roots = sandbox._bubblewrap().cgroups  # the child's are this process's (it inherits them)
    folders = [roots.pids, roots.memory] if roots is not None else []
    cgroups = {str(p) for folder in folders for p in folder.glob(f"asynctg-{pid}-*")}
    return temp | cgroups


@pytest.mark.timeout(300)
async def test_hostile_programs_fail_and_change_nothing_outside(
    scene: _Scene, hostile_provider: tuple[str, list[str], list[str]]
) -> None:
    """Every attack of the threat model fails its test; the run completes with a report; the
    canary key, the home secret and the checkout's text appear in no prompt, file or output;
    nothing is planted, removed or connected to; no process or temp folder survives."""
    base_url, bodies, connections = hostile_provider
    data = scene.root / "hostile.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in scene.problems()))
    report, checkpoint = scene.root / "report", scene.root / "ck"
    tmpdir = scene.root / "tmp"
    tmpdir.mkdir()
    env = {
        "TMPDIR": str(tmpdir),
        "PATH": os.environ["PATH"],
        "HOME": str(scene.home),
        "OPENAI_API_KEY": scene.canary,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(REPO),  # this checkout's asynctg, not whichever one is installed
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asynctg",
        "code",
        "--task",
        "leetcode_hard",
        "--data",
        str(data),
        "--base-url",
        base_url,
        "--model",
        "hostile",
        "--iterations",
        "0",
        "--test-timeout",
        "2",
        "--memory-mb",
        "256",
        "--report",
        str(report),
        "--checkpoint",
        str(checkpoint),
        "--json",
        "--quiet",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=scene.root,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    if os.environ.get("ASYNCTG_SHOW_ATTACKS"):
        for p in result["problems"]:
            print(
                p["task_id"], p.get("seconds"), p.get("error") or p["rounds"][0]["feedback"][-300:]
            )
    by_id = {p["task_id"]: p for p in result["problems"]}
    assert set(by_id) == set(_ATTACKS)
    for name, record in by_id.items():
        assert "error" not in record, (name, record)
        for rnd in record["rounds"]:
            assert rnd["passed"] == [False], (name, rnd["feedback"])
            assert rnd["isolation"].startswith("bubblewrap")
    assert result["final_pass_rate"] == 0.0
    assert result["isolation"].startswith("bubblewrap")
    feedback = {name: by_id[name]["rounds"][0]["feedback"] for name in by_id}
    # the flood reaches only the runner's pipe to the reporter, where it is no line at all
    for name in (
        "output_flood",
        "forge_channel",
        "forge_gc_write",
        "forge_json_dumps",
        "forge_stack_walk",
    ):
        assert "result channel" in feedback[name], name
    assert "plain values" in feedback["forge_equal_everything"]
    # nothing got out, and nothing leaked in
    assert not scene.pth.exists()
    assert scene.victim.read_text() == "keep me"
    assert not scene.outside.exists() and not scene.spawned.exists()
    assert connections == []
    readme_line = (REPO / "README.md").read_text().splitlines()[0]
    files = [p for folder in (report, checkpoint) for p in folder.rglob("*") if p.is_file()]
    assert files
    texts = [
        *bodies,
        out.decode(),
        err.decode(),
        *(p.read_bytes().decode("latin-1") for p in files),
    ]
    for secret in (scene.canary, scene.home_secret, readme_line):
        assert not any(secret in text for text in texts), secret
    assert _processes_with(scene.orphan_mark) == []
    assert _leftover_dirs(tmpdir, proc.pid) == set()


async def test_unsafe_flag_warns_and_the_report_says_so(tmp_path: Path) -> None:
    """--unsafe-no-sandbox runs, warns on stderr and records 'none' as the isolation."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asynctg",
        "code",
        "--sim",
        "--limit",
        "1",
        "--iterations",
        "0",
        "--unsafe-no-sandbox",
        "--json",
        "--quiet",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode in (0, 1), err.decode()
    assert "WARNING: --unsafe-no-sandbox" in err.decode()
    assert json.loads(out)["isolation"] == "none (--unsafe-no-sandbox)"


async def test_missing_bubblewrap_stops_before_anything_runs(tmp_path: Path) -> None:
    """Without bwrap on PATH, `asynctg code` exits 2 with how to install it, sends nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asynctg",
        "code",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--limit",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path), "PYTHONPATH": str(REPO)},
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    message = err.decode()
    assert "apt-get install bubblewrap" in message and "--unsafe-no-sandbox" in message


def test_library_refuses_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library raises SandboxUnavailableError where bubblewrap is missing, not a fallback."""
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox._bubblewrap.cache_clear()
    try:
        with pytest.raises(SandboxUnavailableError, match="apt-get install bubblewrap"):
            asyncio.run(apps.CodeRunner().run("x = 1", ["assert x == 1"]))
    finally:
        monkeypatch.undo()
        sandbox._bubblewrap.cache_clear()
