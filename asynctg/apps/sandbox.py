"""Deprecated import path: this module moved to asynctg.runs.sandbox.

The old name stays an alias of the new module (same object, so patching either patches both);
import asynctg.runs.sandbox in new code.
"""

import sys

from asynctg.runs import sandbox as _moved
from asynctg.runs.sandbox import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = _moved
