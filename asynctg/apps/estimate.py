"""Deprecated import path: this module moved to asynctg.runs.estimate.

The old name stays an alias of the new module (same object, so patching either patches both);
import asynctg.runs.estimate in new code.
"""

import sys

from asynctg.runs import estimate as _moved
from asynctg.runs.estimate import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = _moved
