"""Deprecated import path: this module moved to asynctg.science.molecule.

The old name stays an alias of the new module (same object, so patching either patches both);
import asynctg.science.molecule in new code.
"""

import sys

from asynctg.science import molecule as _moved
from asynctg.science.molecule import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = _moved
