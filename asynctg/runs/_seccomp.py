"""The seccomp filter every bubblewrap sandbox runs under: kernel memory no rlimit bounds.

A classic-BPF program (``struct sock_filter`` entries, what ``bwrap --seccomp FD`` reads) that
answers ``EPERM`` for the calls below and allows everything else. What it closes, for every
user (as root the run's memory cgroup also charges them; as a regular user nothing else does):

- System V IPC, the whole family: shared memory segments (``shmget``: pages that are in no
  process's address space once detached, so ``RLIMIT_AS`` never sees them), message queues
  (``msgget``/``msgsnd``: up to ``msgmni`` queues of ``msgmnb`` bytes each, in kernel memory)
  and semaphore sets (``semget``: up to ``semmni`` sets of ``semmsl`` semaphores). Each
  sandbox has a fresh IPC namespace, so the calls that use an existing object (``shmat``,
  ``msgrcv``, ``semop``, ...) could only fail; they are denied too so the list is the family's.
  Python uses none of them (multiprocessing's locks and ``shared_memory`` are POSIX: files in
  the sandbox's sized ``/dev/shm``).
- ``memfd_create``: an anonymous file lives in the kernel's own unsized tmpfs; writing it is
  bounded only per file (``RLIMIT_FSIZE``), so 256 descriptors in each of 16 processes hold
  gigabytes that no address space counts.

The architecture is checked first: a call made through another ABI (i386's ``int 0x80`` on
x86_64, whose ``ipc`` call multiplexes all of the above; arm32 on aarch64) has other numbers,
so it is denied whatever it is. On x86_64 the x32 ABI reuses the native architecture value
with bit 30 set in the number: every number at or past it is denied. An architecture without a
table here is refused (:class:`SandboxUnavailableError`), never run unfiltered.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from asynctg.errors import SandboxUnavailableError

__all__ = ["DENIED", "filter_program"]

# <linux/filter.h>, <linux/bpf_common.h>: the classic-BPF instructions this program uses
_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS: A = 32-bit word at offset k
_JEQ_K = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K: A == k ? jt : jf
_JGE_K = 0x05 | 0x30 | 0x00  # BPF_JMP | BPF_JGE | BPF_K
_RET_K = 0x06 | 0x00  # BPF_RET | BPF_K
# <linux/seccomp.h>: struct seccomp_data {int nr; __u32 arch; __u64 ip; __u64 args[6];}
_NR_OFFSET, _ARCH_OFFSET = 0, 4
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
DENY = RET_ERRNO | errno.EPERM
_X32_BIT = 0x40000000  # __X32_SYSCALL_BIT


@dataclass(frozen=True)
class _Table:
    audit_arch: int  # <linux/audit.h> AUDIT_ARCH_*
    numbers: dict[str, int]
    x32: bool  # deny numbers at or past __X32_SYSCALL_BIT


# numbers from the kernel's tables: arch/x86/entry/syscalls/syscall_64.tbl and
# include/uapi/asm-generic/unistd.h (aarch64); the same as /usr/include/asm/unistd_64.h
_TABLES = {
    "x86_64": _Table(
        0xC000003E,
        {
            "shmget": 29,
            "shmat": 30,
            "shmctl": 31,
            "semget": 64,
            "semop": 65,
            "semctl": 66,
            "shmdt": 67,
            "msgget": 68,
            "msgsnd": 69,
            "msgrcv": 70,
            "msgctl": 71,
            "semtimedop": 220,
            "memfd_create": 319,
        },
        x32=True,
    ),
    "aarch64": _Table(
        0xC00000B7,
        {
            "msgget": 186,
            "msgctl": 187,
            "msgrcv": 188,
            "msgsnd": 189,
            "semget": 190,
            "semctl": 191,
            "semtimedop": 192,
            "semop": 193,
            "shmget": 194,
            "shmctl": 195,
            "shmat": 196,
            "shmdt": 197,
            "memfd_create": 279,
        },
        x32=False,
    ),
}
_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}
DENIED = tuple(sorted(_TABLES["x86_64"].numbers))


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)  # struct sock_filter, native byte order


def filter_program(machine: str | None = None, denied: Iterable[str] = DENIED) -> bytes:
    """The filter for ``machine`` (default: this kernel's, ``uname -m``), denying ``denied``
    (names of :data:`DENIED`; the tests pass fewer to test the layers below it alone).

    SandboxUnavailableError for a machine without a syscall table here.
    """
    machine = machine if machine is not None else os.uname().machine
    table = _TABLES.get(_ALIASES.get(machine, machine))
    if table is None:
        raise SandboxUnavailableError(
            f"the code sandbox filters system calls (seccomp) with tables for "
            f"{', '.join(sorted(_TABLES))}; this machine is {machine!r}, so it does not run "
            "model-written code here (use a container or VM, or --unsafe-no-sandbox)"
        )
    numbers = sorted({table.numbers[name] for name in denied})
    checks = len(numbers) + (1 if table.x32 else 0)  # jumps are one byte: DENIED stays short
    # layout: [0] load arch, [1] arch?, [2] load nr, [3] x32?, [...] nr == n?, ALLOW, DENY
    program = [_op(_LD_W_ABS, _ARCH_OFFSET)]
    program.append(_op(_JEQ_K, table.audit_arch, jt=0, jf=checks + 2))  # else: to DENY
    program.append(_op(_LD_W_ABS, _NR_OFFSET))
    left = checks  # checks still ahead, this one included: DENY is `left` past the next one
    if table.x32:
        program.append(_op(_JGE_K, _X32_BIT, jt=left, jf=0))
        left -= 1
    for number in numbers:
        program.append(_op(_JEQ_K, number, jt=left, jf=0))
        left -= 1
    program.append(_op(_RET_K, RET_ALLOW))
    program.append(_op(_RET_K, DENY))
    return b"".join(program)
