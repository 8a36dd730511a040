"""``python -m asynctg.sim``: serve the simulated provider in the foreground."""

import sys

from asynctg.sim import main

sys.exit(main())
