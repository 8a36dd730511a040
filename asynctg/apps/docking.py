"""Deprecated import path: this module moved to asynctg.science.docking.

The old name stays an alias of the new module (same object, so patching either patches both);
import asynctg.science.docking in new code.
"""

import sys

from asynctg.science import docking as _moved
from asynctg.science.docking import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = _moved
