"""``python -m asynctg.compat SCRIPT [ARGS...]``: run a TextGrad script unchanged on asynctg.

Inside the script's process ``textgrad`` and every ``textgrad.X`` are ``asynctg.compat`` (see
``asynctg.compat._hook``), even with TextGrad installed. The script runs as ``python SCRIPT``
would run it: ``sys.argv`` is ``[SCRIPT, *ARGS]``, it is ``__main__``, its folder is first on
``sys.path``, relative paths resolve from the current directory, ``sys.exit`` codes pass through,
and an uncaught exception prints its traceback (from the script's frames down) and exits 1.
Calls still in flight at the end are completed before the process exits (``asynctg.compat``).
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence
from types import TracebackType

USAGE = "usage: python -m asynctg.compat SCRIPT [ARGS...]   (runs a TextGrad script on asynctg)"


def _from_script(tb: TracebackType | None, script: str) -> TracebackType | None:
    """The traceback from the script's first frame on (the runner's frames dropped)."""
    first = tb
    while first is not None and os.path.abspath(first.tb_frame.f_code.co_filename) != script:
        first = first.tb_next
    return first or tb


def run_script(argv: Sequence[str]) -> int:
    """Run ``argv[0]`` with arguments ``argv[1:]`` as described in the module; its exit code."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    script = os.path.abspath(argv[0])
    if not os.path.exists(script):
        print(f"python -m asynctg.compat: can't open file {argv[0]!r}", file=sys.stderr)
        return 2
    from asynctg.compat._hook import install

    install()
    sys.argv = [argv[0], *argv[1:]]
    sys.path[0:1] = [os.path.dirname(script)]  # as `python SCRIPT` puts it first
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit:
        raise
    except BaseException as exc:
        trimmed = _from_script(exc.__traceback__, script)
        sys.excepthook(type(exc), exc.with_traceback(trimmed), trimmed)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    return 0


def main() -> None:
    sys.exit(run_script(sys.argv[1:]))


if __name__ == "__main__":
    main()
