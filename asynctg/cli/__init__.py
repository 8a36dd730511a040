"""The ``asynctg`` command line, one module per command family.

::

    asynctg demo                       a short prompt-optimization run on the built-in simulator
    asynctg optimize --task T ...      prompt optimization (BBH, GSM8K); --optimizer gepa: GEPA
    asynctg solve --task T ...         solution optimization at test time (MMLU, GPQA)
    asynctg code --task T ...          code optimization from test feedback (LeetCode-Hard)
    asynctg molecule | radiotherapy    the science loops (docking, treatment planning)
    asynctg bench ...                  load-test an endpoint
    asynctg tasks                      the tasks and the data files they read
    asynctg sim ...                    serve the OpenAI-compatible simulator
    asynctg textgrad SCRIPT ...        run a TextGrad script unchanged

- ``main``: the parser of every command, errors to messages and exit codes.
- ``common``: argument types, endpoint and run options, engines, output helpers.
- ``execute``: plan, estimate, run and summarise a long-running command.
- ``prompt`` (optimize, solve, code, tasks), ``science`` (molecule, radiotherapy),
  ``bench``, ``demo``: each family's options, plan, loop and summary lines.

Exit codes: 0 success (a run stopped by ``--max-cost``/``--max-calls`` included), 1 a run that
failed, 2 bad arguments, settings or input; 130 interrupted.

The CLI is the top layer: nothing else in the library imports it.
"""

from asynctg.cli.common import engine_options, resolve_endpoint
from asynctg.cli.main import main

__all__ = ["engine_options", "main", "resolve_endpoint"]
