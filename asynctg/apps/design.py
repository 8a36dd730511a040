"""Deprecated import path: this module moved to asynctg.science.design.

The old name stays an alias of the new module (same object, so patching either patches both);
import asynctg.science.design in new code.
"""

import sys

from asynctg.science import design as _moved
from asynctg.science.design import *  # noqa: F403  (for type checkers)

sys.modules[__name__] = _moved
