"""``textgrad.tasks.multimodal``: ``load_multimodal_instance_task`` (MathVista, ScienceQA)."""

from __future__ import annotations

from typing import Any

from asynctg.compat.engine.base import EngineLM

__all__ = ["EngineLM", "load_multimodal_instance_task"]


def load_multimodal_instance_task(
    task_name: str, evaluation_api: Any = None, *args: Any, **kwargs: Any
) -> Any:
    """The test split of MathVista (``"mathvista"``) or ScienceQA (``"scienceqa"``)."""
    if task_name == "mathvista":
        from asynctg.compat.tasks.multimodal.mathvista import MathVistaDataset

        return MathVistaDataset(evaluation_api, *args, split="testmini", **kwargs)
    if task_name == "scienceqa":
        from asynctg.compat.tasks.multimodal.scienceqa import ScienceQADataset

        return ScienceQADataset(evaluation_api, *args, split="test", **kwargs)
    raise ValueError(f"Instance task {task_name} not found.")
