"""Deprecated import path: this module moved to asynctg.runs.progress.

The old name stays an alias of the new module (same object, so patching either patches both);
import asynctg.runs.progress in new code.
"""

import sys

from asynctg.runs import progress as _moved
from asynctg.runs.progress import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = _moved
