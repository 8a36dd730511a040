"""Running model-written code against its tests, inside bubblewrap, with verdicts decided here.

Everything a model writes is untrusted: whoever can steer the provider's output chooses the code.
So each program runs in a fresh `bubblewrap <https://github.com/containers/bubblewrap>`_ sandbox
(the one Flatpak uses):

- new user, PID, IPC, UTS, cgroup, mount and network namespaces (``--unshare-all``; the network
  has only its own loopback), no further user namespaces (``--disable-userns``), all
  capabilities dropped, ``--die-with-parent`` and ``--new-session`` (no terminal injection);
- an empty root with only ``/usr`` (and the ``/lib*``/``/bin`` links), the Python installation
  and the dynamic linker's cache mounted read-only; a private ``/tmp`` tmpfs (64 MiB) and
  ``/dev/shm`` tmpfs (16 MiB) are the only writable places (``/dev`` itself is read-only: the
  tmpfs bubblewrap puts there has no size of its own); no home, no checkout, no virtualenv, no
  ``/etc``, no host sockets, and a ``/proc`` that shows only the sandbox's own processes;
- ``--clearenv`` and a three-variable environment; the parent starts bubblewrap itself with a
  minimal environment, so no key of the user's is anywhere in the sandbox;
- ``python -I -S`` (no site-packages, no ``.pth`` files, no environment variables read);
- hard resource limits set before the code runs (address space, CPU seconds, file size,
  processes, open files, no core files): soft and hard are equal, so the code cannot raise them.
  As root the kernel does not apply the process limit, so a ``pids`` cgroup caps the sandbox
  instead (and is used to kill every process it holds);
- for every user, a seccomp filter (``bwrap --seccomp``, built in ``asynctg/runs/_seccomp.py``
  and handed over on a pipe per run) answers ``EPERM`` to the kernel memory no rlimit covers:
  System V IPC (shared memory segments through ``ctypes``' ``shmget``, message queues,
  semaphore sets) and ``memfd_create``. It checks the architecture first (another ABI, x32
  included, is denied), and a machine without a syscall table is refused, never run unfiltered;
- as root, a ``memory`` cgroup per run too (v1: ``memory.limit_in_bytes`` and, where present,
  ``memory.memsw.limit_in_bytes``, made under this process's own memory cgroup when writable,
  else the hierarchy's root; v2: ``memory.max`` and ``memory.swap.max = 0`` in the pids
  cgroup). It holds all the sandbox's processes together to ``memory_mb`` plus the two tmpfs
  plus 64 MiB for bubblewrap and the reporter, and it is charged with shared memory (tmpfs
  pages; System V segments too, were the filter ever lifted). Past it the kernel kills the run
  ("ran out of memory"). As root, where a pids cgroup can be made and a memory cgroup cannot,
  the sandbox refuses to run, as it does without a pids cgroup: no silently weaker run. As a
  regular user no cgroup is made: the rlimits apply per process (``describe()`` says so).

Verdicts are decided here, from values the code under test cannot forge into a pass. In the
sandbox, ``asynctg/runs/_harness.py`` runs as two processes. The *reporter* starts first, makes
itself non-dumpable (no process of the sandbox can open its descriptors under ``/proc``, nor
read or write its memory), and is the only holder of the result channel: a pipe of its own
(bubblewrap's init, pid 1 in the sandbox, holds stdin, stdout and stderr and nothing else). It
forks the *runner*, which keeps nothing but a private pipe to the reporter and runs the code and
each test. The reporter relays one line per test, re-encoded by itself, and only if the line
is that test's and of its kind; anything else (a line out of order, too long, of the wrong kind,
or after the last test's) ends the relay, and the parent voids the whole run ("the program wrote
to the test harness's result channel").

The code controls the runner, so everything the runner says is treated as the code's claim
(the parent's side of the judging, planning each test and decoding what comes back, is
``asynctg.runs._verdicts``):

- ``assert EXPR OP LITERAL`` (or ``LITERAL OP EXPR``; every built-in task and LeetCode-Hard test):
  only ``EXPR`` enters the sandbox; its value comes back as plain, type-tagged data and is
  compared here with the literal, which never enters the sandbox: no line passes such a test
  without carrying a value that compares true with it (code that hard-codes the answers of tests
  shown in its prompt is another matter: only hidden tests catch that). An object that claims to
  equal everything is not plain data and fails. A ``done`` line never counts for such a test.
- ``assert EXPR OP OTHER`` with a non-literal ``OTHER`` and a bare ``assert EXPR``: both sides
  (or the value) come from the sandbox and are compared here; code written to cheat can choose
  them, so such a test pins only what an honest program computes.
- a statement test (anything but one ``assert``): its only result is "ran to the end" (``done``),
  which the process running it reports; code written to cheat can claim it. ``done`` counts only
  for these tests, once, in order.

What the child sends is read up to ``max_output_bytes`` (more fails the remaining tests with
"output too large") and decoded in a worker thread, with bounded node counts, depth and integer
sizes; a set or dict whose elements share one hash value more than 32 times fails its test
instead of being built (its insertion would be quadratic). At the end of every run, not only on
timeout, the sandbox's process group is killed (bubblewrap's PID namespace takes every process
in it along), and its ``/tmp`` and ``/dev/shm`` go with the mount namespace: no process and no
file outlives the run.

Where bubblewrap is missing or refused (Docker's default seccomp profile, Ubuntu's AppArmor rule
for unprivileged user namespaces, macOS), :class:`SandboxUnavailableError` says so before
anything runs; there is no silent fallback. ``isolation="unsafe-no-sandbox"`` (the CLI's
``--unsafe-no-sandbox``) runs the same harness (reporter and runner) as a plain child process with
the same limits and an audit-hook tripwire in the runner, which code written to escape gets past
(and with it the verdicts); it logs a warning every time a runner is made.
docs/applications.md has the threat model.

>>> # run = await CodeRunner().run("def f(x):\\n    return x + 1", ["assert f(1) == 2"])
>>> # run.all_passed -> True
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from asynctg import prompts
from asynctg.errors import ConfigError, SandboxUnavailableError, require_int
from asynctg.runs import _seccomp
from asynctg.runs._verdicts import TestOutcome, _outcomes, _plan

__all__ = [
    "CodeRunner",
    "TestOutcome",
    "TestRun",
    "extract_code",
    "probe_isolation",
    "run_tests",
]

log = logging.getLogger("asynctg.sandbox")

Isolation = Literal["bubblewrap", "unsafe-no-sandbox"]
HARNESS = Path(__file__).with_name("_harness.py")
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
_INSTALL_HINT = (
    "Install it (Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`), "
    "or run asynctg inside a container or VM that allows it; `--unsafe-no-sandbox` "
    "(CodeRunner(isolation='unsafe-no-sandbox')) runs model-written code without isolation."
)
_FEEDBACK_CHARS = 8000  # the test report sent back to the model
_UNSAFE_WARNING = (
    "model-written code runs WITHOUT a sandbox (--unsafe-no-sandbox): it can read your files "
    "and keys and reach the network"
)


@dataclass(frozen=True)
class TestRun:
    """The outcome of running code against its tests, and the isolation it ran under."""

    __test__ = False

    outcomes: tuple[TestOutcome, ...]
    seconds: float
    timed_out: bool
    isolation: str

    @property
    def passed(self) -> tuple[bool, ...]:
        return tuple(o.passed for o in self.outcomes)

    @property
    def all_passed(self) -> bool:
        return all(self.passed) and bool(self.outcomes)

    def feedback(self) -> str:
        """The test results as the code evaluator reads them, at most about 8,000 characters."""
        passed = _capped([o.line() for o in self.outcomes if o.passed], _FEEDBACK_CHARS // 2)
        failed = _capped([o.line() for o in self.outcomes if not o.passed], _FEEDBACK_CHARS // 2)
        return prompts.unit_test_report(passed, failed)


def _capped(lines: list[str], budget: int) -> list[str]:
    kept: list[str] = []
    for i, line in enumerate(lines):
        if budget - len(line) < 0:
            kept.append(f"... and {len(lines) - i} more")
            break
        budget -= len(line) + 1
        kept.append(line)
    return kept


def extract_code(text: str) -> str:
    """The code of a reply: the first ```python block, else the first ``` block, else the text.

    >>> extract_code("Here:\\n```python\\nx = 1\\n```\\nDone.")
    'x = 1'
    """
    for fence in ("```python", "```py", "```"):
        start = text.find(fence)
        if start >= 0:
            start = text.find("\n", start)
            if start < 0:
                break
            end = text.find("```", start + 1)
            return (text[start + 1 :] if end < 0 else text[start + 1 : end]).strip("\n")
    return text.strip()


# --- the sandbox ------------------------------------------------------------------------------


@functools.cache
def _harness_source() -> str:
    return HARNESS.read_text(encoding="utf-8")


def _python() -> str:
    """The base interpreter (a virtualenv's ``python`` is a link to it or a copy of it)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (
        os.path.realpath(sys.executable),
        os.path.join(sys.base_prefix, "bin", version),
    ):
        if os.path.isfile(candidate) and not candidate.startswith(
            os.path.realpath(sys.prefix) + os.sep
        ):
            return candidate
    return os.path.join(sys.base_prefix, "bin", version)


def _pids_cgroup_root() -> Path | None:
    """A pids-controller folder this process may create cgroups in (root only), or None."""
    v1 = Path("/sys/fs/cgroup/pids")
    if (v1 / "cgroup.procs").exists() and os.access(v1, os.W_OK):
        return v1
    v2 = Path("/sys/fs/cgroup")
    try:
        controllers = (v2 / "cgroup.subtree_control").read_text().split()
    except OSError:
        return None
    return v2 if "pids" in controllers and os.access(v2, os.W_OK) else None


def _memory_cgroup_root(pids_root: Path) -> Path | None:
    """A memory-controller folder this process may create cgroups in (root only), or None.

    cgroup v2: the pids folder itself, when its children get the memory controller. cgroup v1:
    this process's own memory cgroup, so a run stays inside whatever limit the host put this
    process under, else the hierarchy's root."""
    if pids_root == Path("/sys/fs/cgroup"):
        try:
            controllers = (pids_root / "cgroup.subtree_control").read_text().split()
        except OSError:
            return None
        return pids_root if "memory" in controllers else None
    v1 = Path("/sys/fs/cgroup/memory")
    candidates: list[Path] = []
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/cgroup").read_text().splitlines()[:64]:
            _, names, path = line.split(":", 2)
            if "memory" in names.split(","):
                candidates.append(v1 / path.lstrip("/"))
    candidates.append(v1)
    for folder in candidates:
        if (folder / "memory.limit_in_bytes").exists() and os.access(folder, os.W_OK):
            return folder
    return None


@dataclass(frozen=True)
class _CgroupRoots:
    """Where each run gets its cgroups (root only); one folder for both on cgroup v2."""

    pids: Path
    memory: Path


def _cgroup_roots() -> _CgroupRoots:
    """Both roots, or SandboxUnavailableError: as root, nothing else bounds processes or shared
    memory (the kernel ignores RLIMIT_NPROC for root; no rlimit covers System V segments)."""
    pids = _pids_cgroup_root()
    if pids is None:
        raise SandboxUnavailableError(
            "running as root, the code sandbox limits the number of processes with a pids "
            "cgroup, and none is writable here (/sys/fs/cgroup/pids or a cgroup v2 root with "
            "the pids controller). Run asynctg as a regular user, or in a container that "
            "delegates a cgroup. " + _INSTALL_HINT
        )
    memory = _memory_cgroup_root(pids)
    if memory is None:
        raise SandboxUnavailableError(
            "running as root, the code sandbox caps a run's memory, System V shared memory "
            "included, with a memory cgroup, and none is writable here (/sys/fs/cgroup/memory, "
            "or the memory controller in the cgroup v2 root's cgroup.subtree_control). Run "
            "asynctg as a regular user, or in a container that delegates a cgroup. " + _INSTALL_HINT
        )
    return _CgroupRoots(pids, memory)


@dataclass(frozen=True)
class _Bubblewrap:
    bwrap: str
    version: str
    python: str
    options: tuple[str, ...]  # everything before the seccomp filter and the command
    cgroups: _CgroupRoots | None  # where to make a run's cgroups (root only)
    seccomp: bytes  # the BPF program every sandbox runs under (asynctg/runs/_seccomp.py)

    def describe(self) -> str:
        if self.cgroups is not None:
            limits = "process limit: pids cgroup; memory: cgroup"
        else:
            limits = "process limit: RLIMIT_NPROC; memory: RLIMIT_AS per process"
        return f"bubblewrap {self.version} ({limits}; System V IPC and memfd: denied by seccomp)"

    @contextlib.contextmanager
    def seccomp_fd(self) -> Iterator[int]:
        """A pipe's read end holding the filter, for one bubblewrap (it reads it to the end)."""
        source, sink = os.pipe()
        try:
            with contextlib.closing(os.fdopen(sink, "wb", buffering=0)) as pipe:
                pipe.write(self.seccomp)  # a few hundred bytes: one write, well under PIPE_BUF
            yield source
        finally:
            os.close(source)

    def command(self, seccomp_fd: int, argv: Sequence[str]) -> list[str]:
        return [self.bwrap, *self.options, "--seccomp", str(seccomp_fd), "--", *argv]


def _bwrap_options(bwrap_help: str, tmp_bytes: int) -> list[str]:
    options = ["--unshare-all", "--unshare-user"]
    if "--disable-userns" in bwrap_help:
        options.append("--disable-userns")
    options += ["--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox"]
    options += ["--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp"]
    options += ["--setenv", "LANG", "C.UTF-8"]
    if os.geteuid() == 0:
        options += ["--cap-drop", "ALL"]
    options += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            options += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            options += ["--ro-bind", top, top]
    if os.path.isfile("/etc/ld.so.cache"):
        options += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    python = _python()
    roots = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}
    roots.add(os.path.dirname(os.path.dirname(python)))
    for root in sorted(roots):
        if root != "/usr" and not root.startswith("/usr/") and os.path.isdir(root):
            options += ["--ro-bind", root, root]
    options += ["--proc", "/proc", "--dev", "/dev"]
    # --dev's own tmpfs has no size (the kernel's default is half the host's RAM): /dev/shm
    # becomes a sized tmpfs of its own and /dev itself read-only, so neither takes host memory
    sized = "--size" in bwrap_help and "--perms" in bwrap_help
    if sized:
        options += ["--perms", "1777", "--size", str(_SHM_BYTES), "--tmpfs", "/dev/shm"]
    if "--remount-ro" in bwrap_help:
        options += ["--remount-ro", "/dev"]  # without a sized /dev/shm, that one too
    if "--size" in bwrap_help:
        options += ["--size", str(tmp_bytes)]
    options += ["--tmpfs", "/tmp", "--chdir", "/tmp"]
    return options


_TMP_BYTES = 64 << 20
_SHM_BYTES = 16 << 20  # POSIX shared memory (multiprocessing's locks, shared_memory)
# the memory cgroup's share beyond memory_mb and the two tmpfs: bubblewrap, its init, the
# reporter and the kernel's own objects for them (page tables, namespaces); about 25 MiB is used
_HEADROOM_BYTES = 64 << 20


@functools.cache
def _bubblewrap() -> _Bubblewrap:
    """Find bubblewrap and prove it works here, once per process; SandboxUnavailableError if not."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailableError(
            f"the code sandbox needs Linux (bubblewrap); this is {sys.platform}. {_INSTALL_HINT}"
        )
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailableError(
            f"the code sandbox needs bubblewrap (`bwrap`), which is not installed. {_INSTALL_HINT}"
        )
    try:
        version = subprocess.run(
            [bwrap, "--version"], capture_output=True, text=True, timeout=10, env=_ENV
        ).stdout.split()[-1]
        help_text = subprocess.run(
            [bwrap, "--help"], capture_output=True, text=True, timeout=10, env=_ENV
        ).stdout
    except (OSError, subprocess.SubprocessError, IndexError) as exc:
        raise SandboxUnavailableError(f"bubblewrap at {bwrap} does not run: {exc}") from exc
    if "--seccomp" not in help_text:
        raise SandboxUnavailableError(
            f"bubblewrap {version} at {bwrap} has no --seccomp option, which the code sandbox "
            f"needs; install a newer one. {_INSTALL_HINT}"
        )
    # The kernel never applies RLIMIT_NPROC to root, user namespace or not.
    cgroups = _cgroup_roots() if os.geteuid() == 0 else None
    options = tuple(_bwrap_options(help_text, _TMP_BYTES))
    # an architecture without a syscall table is refused here, never run unfiltered
    box = _Bubblewrap(bwrap, version, _python(), options, cgroups, _seccomp.filter_program())
    try:
        with box.seccomp_fd() as fd:
            proc = subprocess.run(
                box.command(fd, [box.python, "-I", "-S", "-c", "print(6 * 7)"]),
                capture_output=True,
                text=True,
                timeout=30,
                env=_ENV,
                cwd="/",
                pass_fds=(fd,),
            )
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxUnavailableError(f"bubblewrap could not start: {exc}") from exc
    if proc.returncode != 0 or proc.stdout.strip() != "42":
        reason = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise SandboxUnavailableError(
            f"bubblewrap is installed but refused to start the sandbox here ({reason[:300]}); "
            "unprivileged user namespaces may be blocked (Docker's default seccomp profile, "
            "Ubuntu's kernel.apparmor_restrict_unprivileged_userns). " + _INSTALL_HINT
        )
    return box


def probe_isolation(isolation: Isolation = "bubblewrap") -> str:
    """Check that ``isolation`` works on this machine and describe it; raise if it does not.

    Blocking (it may start bubblewrap once); the result is cached for the process.
    """
    if isolation == "unsafe-no-sandbox":
        return "none (--unsafe-no-sandbox)"
    if isolation != "bubblewrap":
        raise ConfigError(
            f"isolation must be 'bubblewrap' or 'unsafe-no-sandbox', got {isolation!r}"
        )
    return _bubblewrap().describe()


class _Cgroup:
    """One run's cgroups (root only): a pids one caps the process count and names every
    process; a memory one caps the memory of all of them together, shared memory (tmpfs pages,
    System V segments) included. One folder for both on cgroup v2."""

    def __init__(self, roots: _CgroupRoots, processes: int, memory_bytes: int) -> None:
        name = f"asynctg-{os.getpid()}-{time.monotonic_ns()}"
        self.pids, self.memory = roots.pids / name, roots.memory / name
        self.paths = list(dict.fromkeys([self.memory, self.pids]))  # removed in reverse
        made: list[Path] = []
        try:
            for path in self.paths:
                path.mkdir()
                made.append(path)
            (self.pids / "pids.max").write_text(str(processes))
            if (self.memory / "memory.limit_in_bytes").exists():  # v1
                (self.memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
                # memory and swap together (only after the first, which it may not undercut)
                swap = self.memory / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    swap.write_text(str(memory_bytes))
            else:
                (self.memory / "memory.max").write_text(str(memory_bytes))
                swap = self.memory / "memory.swap.max"  # v2 counts swap on its own
                if swap.exists():
                    swap.write_text("0")
        except OSError:
            for path in reversed(made):
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise

    def joins(self) -> list[str]:
        """The files a process writes its pid to, to enter every one of these cgroups."""
        return [str(path / "cgroup.procs") for path in self.paths]

    def out_of_memory(self) -> bool:
        """Whether the kernel killed a process of the run for going past the memory limit."""
        for name in ("memory.oom_control", "memory.events"):  # v1, v2
            with contextlib.suppress(OSError, ValueError):
                for line in (self.memory / name).read_text().splitlines()[:32]:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value) > 0
        return False

    def kill_all(self) -> bool:
        """SIGKILL everything in it; True once it is empty."""
        try:
            pids = (self.pids / "cgroup.procs").read_text().split()
        except OSError:
            return True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        return not pids

    async def remove(self) -> None:
        left = list(reversed(self.paths))
        for attempt in range(400):  # a killed process leaves the cgroup when it is reaped
            if self.kill_all():
                while left:
                    try:
                        left[0].rmdir()
                    except OSError:
                        if attempt == 200 and (left[0] / "memory.force_empty").exists():
                            # v1 may keep a cgroup that still holds charges: drop them
                            with contextlib.suppress(OSError):
                                (left[0] / "memory.force_empty").write_text("0")
                        break
                    left.pop(0)
                if not left:
                    return
            await asyncio.sleep(0.005)
        log.warning(
            "could not remove %s: processes are still leaving it", ", ".join(map(str, left))
        )


# pid into each cgroup.procs named before "--", then exec the rest (bubblewrap)
_JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


class CodeRunner:
    """Runs code against assert-line tests in sandboxes; at most ``max_parallel`` at a time.

    ``per_test_seconds`` is each test's wall-clock limit; the whole run gets
    ``per_test_seconds * tests + startup_seconds`` before it is killed. ``memory_mb`` caps each
    process's address space and, as root, the whole sandbox's memory (a memory cgroup of
    ``memory_mb`` + 144 MiB: /tmp, /dev/shm, headroom), ``max_processes`` the processes and
    threads, ``max_output_bytes``
    what is read from the child. ``isolation="bubblewrap"`` (the default) refuses to run where
    bubblewrap does not work; ``"unsafe-no-sandbox"`` runs without isolation and warns.

    ``run`` never raises for anything the code does: crashes, floods, forks, hangs, forged results
    and harness failures all become failed tests. It raises only ``SandboxUnavailableError``
    (before starting anything) and cancellation.
    """

    def __init__(
        self,
        *,
        per_test_seconds: float = 5.0,
        memory_mb: int = 1024,
        startup_seconds: float = 5.0,
        max_parallel: int | None = None,
        max_processes: int = 16,
        max_output_bytes: int = 1 << 20,
        isolation: Isolation = "bubblewrap",
    ) -> None:
        if not (isinstance(per_test_seconds, int | float) and 0 < per_test_seconds < math.inf):
            raise ConfigError(f"per_test_seconds must be > 0, got {per_test_seconds!r}")
        require_int("memory_mb", memory_mb, 64)
        require_int("max_processes", max_processes, 4)
        require_int("max_output_bytes", max_output_bytes, 1024)
        if isolation not in ("bubblewrap", "unsafe-no-sandbox"):
            raise ConfigError(
                f"isolation must be 'bubblewrap' or 'unsafe-no-sandbox', got {isolation!r}"
            )
        self.per_test_seconds = float(per_test_seconds)
        self.memory_mb = memory_mb
        self.startup_seconds = startup_seconds
        self.max_processes = max_processes
        self.max_output_bytes = max_output_bytes
        self.isolation: Isolation = isolation
        self._slots = asyncio.Semaphore(max_parallel or os.cpu_count() or 2)
        if isolation == "unsafe-no-sandbox":
            log.warning(_UNSAFE_WARNING)

    async def ensure_ready(self) -> str:
        """Check the isolation works here (SandboxUnavailableError if not) and describe it."""
        return await asyncio.to_thread(probe_isolation, self.isolation)

    async def run(self, code: str, tests: Sequence[str]) -> TestRun:
        """Run ``code`` against ``tests``; never raises for anything the code does."""
        tests = [str(t) for t in tests]
        await self.ensure_ready()  # once per process; SandboxUnavailableError before anything
        box = _bubblewrap() if self.isolation == "bubblewrap" else None
        async with self._slots:
            started = time.monotonic()
            try:
                return await self._run(box, code, tests, started)
            except (OSError, ValueError, RuntimeError) as exc:
                # our side failed (no fds or processes left, ...): the tests fail, the run goes on
                message = f"no result: the test run could not be started ({exc})"
                return TestRun(
                    tuple(TestOutcome(t, False, message) for t in tests),
                    round(time.monotonic() - started, 3),
                    False,
                    self._describe(box),
                )

    def _memory_bytes(self) -> int:
        """The memory cgroup's limit: the program's memory, the two tmpfs and the headroom."""
        return (self.memory_mb << 20) + _TMP_BYTES + _SHM_BYTES + _HEADROOM_BYTES

    def _describe(self, box: _Bubblewrap | None) -> str:
        return box.describe() if box is not None else "none (--unsafe-no-sandbox)"

    async def _run(
        self, box: _Bubblewrap | None, code: str, tests: list[str], started: float
    ) -> TestRun:
        plans = [_plan(t) for t in tests]
        checks = [p.send for p in plans if p.send is not None]
        limit = self.per_test_seconds * max(1, len(tests)) + self.startup_seconds
        settings: dict[str, Any] = {
            "code": code,
            "checks": checks,
            "per_test_seconds": self.per_test_seconds,
            "tripwire": box is None,
            "limits": {
                "memory_bytes": self.memory_mb << 20,
                "cpu_seconds": math.ceil(limit) + 1,
                "file_bytes": 16 << 20,
                "processes": self.max_processes,
                "open_files": 256,
                "core_bytes": 0,
            },
        }
        command = [_python(), "-I", "-S", "-c", _harness_source()]
        cgroup: _Cgroup | None = None
        pass_fds: tuple[int, ...] = ()
        with contextlib.ExitStack() as stack:
            if box is None:
                cwd = stack.enter_context(tempfile.TemporaryDirectory(prefix="asynctg-run-"))
            else:
                cwd = "/"
                pass_fds = (stack.enter_context(box.seccomp_fd()),)
                command = box.command(pass_fds[0], [box.python, *command[1:]])
                if box.cgroups is not None:
                    cgroup = _Cgroup(box.cgroups, self.max_processes + 4, self._memory_bytes())
                    # the shell joins the cgroups, then becomes bubblewrap: nothing escapes them
                    command = ["/bin/sh", "-c", _JOIN, "sh", *cgroup.joins(), "--", *command]
            out_of_memory = False
            try:
                raw, state, returncode = await self._talk(command, cwd, settings, limit, pass_fds)
            finally:
                if cgroup is not None:
                    out_of_memory = cgroup.out_of_memory()
                    await cgroup.remove()
        if out_of_memory:
            why = (
                f"no result: the run ran out of memory (its {self._memory_bytes() >> 20} MiB "
                "cover every process, /tmp, /dev/shm and shared memory together)"
            )
        elif state == "overflow":
            why = (
                f"no result: output too large (the program wrote more than "
                f"{self.max_output_bytes} bytes to the test harness)"
            )
        elif state == "timeout":
            why = f"no result: the run was stopped after {limit:g} s"
        else:
            why = (
                f"no result: the process ended early (exit status {returncode}; out of memory, "
                "CPU time or processes?)"
            )
        # off the loop: decoding up to max_output_bytes of untrusted values takes a while
        outcomes = await asyncio.to_thread(_outcomes, tests, plans, raw, why)
        return TestRun(
            outcomes, round(time.monotonic() - started, 3), state == "timeout", self._describe(box)
        )

    async def _talk(
        self,
        command: list[str],
        cwd: str,
        settings: dict[str, Any],
        limit: float,
        pass_fds: tuple[int, ...],
    ) -> tuple[bytes, str, int | None]:
        # The result channel is a pipe of its own, not stdout: bubblewrap's init process (pid 1
        # in the sandbox, reachable through /proc/1/fd) holds its stdin, stdout and stderr, and
        # none of its other descriptors. Only the harness's reporter holds the write end.
        source, sink = os.pipe()
        try:
            payload = json.dumps({**settings, "result_fd": sink}).encode("utf-8", "surrogatepass")
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                cwd=cwd,
                env=_ENV,
                pass_fds=(sink, *pass_fds),
                start_new_session=True,  # its own process group, killed as a whole
            )
        except BaseException:
            os.close(source)
            raise
        finally:
            os.close(sink)
        chunks: list[bytes] = []
        state = "done"
        pipe = os.fdopen(source, "rb", buffering=0)
        reader = asyncio.StreamReader()
        transport: asyncio.BaseTransport | None = None
        try:
            transport, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe
            )
            try:
                async with asyncio.timeout(limit):
                    if not await _exchange(proc, reader, payload, chunks, self.max_output_bytes):
                        state = "overflow"
                    else:
                        await proc.wait()
            except TimeoutError:
                state = "timeout"
        finally:
            if transport is None:
                pipe.close()
            # always, not only on timeout: whatever the code left running goes too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(_reap(proc, reader if transport is not None else None))
            if transport is not None:
                transport.close()
        return b"".join(chunks), state, proc.returncode


async def _exchange(
    proc: asyncio.subprocess.Process,
    results: asyncio.StreamReader,
    payload: bytes,
    chunks: list[bytes],
    cap: int,
) -> bool:
    """Feed the payload, read at most ``cap`` bytes until EOF; False when the cap was hit."""
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(payload)
        await proc.stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.close()
    total = 0
    while chunk := await results.read(1 << 16):
        total += len(chunk)
        if total > cap:
            chunks.append(chunk[: len(chunk) - (total - cap)])
            return False
        chunks.append(chunk)
    return True


async def _reap(proc: asyncio.subprocess.Process, results: asyncio.StreamReader | None) -> None:
    """Wait for the killed sandbox and read its result pipe to the end."""
    if results is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):  # every writer is dead: only buffered bytes remain
                while await results.read(1 << 16):
                    pass
    await proc.wait()


async def run_tests(
    code: str,
    tests: Sequence[str],
    *,
    per_test_seconds: float = 5.0,
    memory_mb: int = 1024,
    isolation: Isolation = "bubblewrap",
) -> TestRun:
    """Run ``code`` against assert-line ``tests`` once (see ``CodeRunner``)."""
    runner = CodeRunner(per_test_seconds=per_test_seconds, memory_mb=memory_mb, isolation=isolation)
    return await runner.run(code, tests)
