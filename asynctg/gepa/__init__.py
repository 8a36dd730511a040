"""GEPA's reflective Pareto search (Agrawal et al., 2025) on asynctg's engines.

``optimize`` / ``aoptimize`` take gepa 0.1.4's core arguments and return a result with the
fields of its ``GEPAResult``; with one proposal per iteration they make gepa's decisions for the
same seed and the same answers, while every evaluation fans out through the engine.

>>> import asynctg.gepa
>>> # result = asynctg.gepa.optimize(seed_candidate={"system_prompt": "Answer briefly."},
>>> #     trainset=train, valset=val, task_lm="gpt-4o-mini", reflection_lm="gpt-4o",
>>> #     max_metric_calls=300, num_parallel_proposals=4)
"""

from asynctg.gepa.adapter import DefaultAdapter, EvaluationBatch, GEPAAdapter
from asynctg.gepa.proposer import Proposer, Reflection, extract_fenced
from asynctg.gepa.result import GEPAResult
from asynctg.gepa.search import Progress, aoptimize, optimize

__all__ = [
    "DefaultAdapter",
    "EvaluationBatch",
    "GEPAAdapter",
    "GEPAResult",
    "Progress",
    "Proposer",
    "Reflection",
    "aoptimize",
    "extract_fenced",
    "optimize",
]
