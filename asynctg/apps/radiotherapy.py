"""Deprecated import path: this module moved to asynctg.science.radiotherapy.

The old name stays an alias of the new module (same object, so patching either patches both);
import asynctg.science.radiotherapy in new code.
"""

import sys

from asynctg.science import radiotherapy as _moved
from asynctg.science.radiotherapy import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = _moved
