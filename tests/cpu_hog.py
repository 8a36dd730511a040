"""Load every CPU with busy-looping processes, for checking that the suite passes on a loaded
machine. Not a test module: pytest collects only ``test_*.py`` files.

    python tests/cpu_hog.py                      # os.cpu_count() processes until killed
    python tests/cpu_hog.py --procs 4 --seconds 600

It stops after ``--seconds`` (if given), on SIGTERM or on Ctrl-C, and takes its workers with it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import time
from types import FrameType


def spin(seconds: float | None, parent: int) -> None:
    """Busy-loop one CPU until ``seconds`` have passed (forever when None) or ``parent`` dies."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    deadline = None if seconds is None else time.monotonic() + seconds
    x = 0
    while True:
        for _ in range(100_000):
            x = (x * 31 + 7) % 1_000_003
        if deadline is not None and time.monotonic() >= deadline:
            return
        if parent and os.getppid() != parent:  # the parent was killed (SIGKILL): stop too
            return


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--procs",
        type=int,
        default=os.cpu_count() or 1,
        help="busy processes to start (default: os.cpu_count())",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until killed)",
    )
    args = parser.parse_args(argv)
    if args.procs < 1:
        parser.error("--procs must be at least 1")
    if args.seconds is not None and not args.seconds > 0:
        parser.error("--seconds must be a positive number")
    return args


def run(procs: int, seconds: float | None) -> int:
    """Start ``procs`` busy workers and wait for them; stop them all on SIGTERM or SIGINT."""
    # forked workers are children of this process, so they can notice when it is gone
    forked = "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if forked else None)
    parent = os.getpid() if forked else 0
    workers = [
        context.Process(target=spin, args=(seconds, parent), daemon=True) for _ in range(procs)
    ]
    for worker in workers:
        worker.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        for worker in workers:
            worker.join(timeout=5)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"cpu_hog: {procs} busy process(es), pid {os.getpid()}", file=sys.stderr, flush=True)
    for worker in workers:
        worker.join()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run(args.procs, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
