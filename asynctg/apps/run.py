"""Deprecated import path: this module moved to asynctg.runs.loop.

The old name stays an alias of the new module (same object, so patching either patches both);
import asynctg.runs.loop in new code.
"""

import sys

from asynctg.runs import loop as _moved
from asynctg.runs.loop import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = _moved
