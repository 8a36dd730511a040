"""Deprecated import path: this module moved to ``asynctg.cli.science``.

The old name stays an alias of the new module (same object); import ``asynctg.cli.science`` in
new code.
"""

import sys

from asynctg.cli import science as _moved
from asynctg.cli.science import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = _moved
