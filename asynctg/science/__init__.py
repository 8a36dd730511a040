"""The science applications of the TextGrad paper: designs rewritten against a CPU-heavy
objective evaluated in worker processes.

- ``design``: the loop behind both (every design refined concurrently; evaluations in a pool).
- ``molecule`` with ``docking``: SMILES strings for docking score and drug-likeness (§3.4).
- ``radiotherapy`` with ``dosimetry``: a treatment plan's objective set (§3.5).
- ``report``: what a design run's report shows.

Built on ``asynctg.runs`` and the graph, optimizer and worker layers; the command lines are in
``asynctg.cli.science``.
"""
