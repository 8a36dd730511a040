"""Deprecated import path: this module moved to asynctg.runs.checkpoint.

The old name stays an alias of the new module (same object, so patching either patches both);
import asynctg.runs.checkpoint in new code.
"""

import sys

from asynctg.runs import checkpoint as _moved
from asynctg.runs.checkpoint import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = _moved
