"""``python -m asynctg`` is the ``asynctg`` command."""

from asynctg.cli import main

raise SystemExit(main())
