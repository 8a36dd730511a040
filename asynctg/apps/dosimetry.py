"""Deprecated import path: this module moved to asynctg.science.dosimetry.

The old name stays an alias of the new module (same object, so patching either patches both);
import asynctg.science.dosimetry in new code.
"""

import sys

from asynctg.science import dosimetry as _moved
from asynctg.science.dosimetry import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = _moved
