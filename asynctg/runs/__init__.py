"""Run infrastructure: what any long run needs around its loop, whichever loop it is.

- ``loop``: events for progress displays, usage metering, budget caps, the job a run goes
  through, a run's checkpoint state and how it stops (``Run``, ``ItemRun``).
- ``rounds``: the rounds of refinement within one item (evaluate, then loss, backward, step),
  shared by the solution, code and design loops.
- ``checkpoint``: a run's folder (config, state, journal of calls) from which it resumes.
- ``progress``: the live status line; ``report``: ``report.json`` and ``report.html``.
- ``estimate``: the dry run that says what a run will spend before it spends.
- ``sandbox``: model-written code run against its tests inside bubblewrap.

The paper's loops (``asynctg.apps``), the science loops (``asynctg.science``) and the load
tests (``asynctg.loadtest``) build on this package; it imports none of them.
"""
