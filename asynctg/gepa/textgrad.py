"""The reflective step as TextGrad: a backward pass over the minibatch, then one TGD step.

Each component to rewrite is a ``Variable``; each record of the adapter's reflective dataset
(inputs, outputs, feedback) becomes a node that reads the component, whose value is the
recorded feedback. ``sum(...).backward()`` asks, for every record at once, how the component
should change to address that feedback (one backward call per record and component, all
concurrent); ``TextualGradientDescent`` then rewrites every component in one step, with its
gradient aggregation (``"auto"``: a tree of reduce calls when a large minibatch's feedback
would not fit). Several components are one graph, so a multi-variable system is optimized
jointly, and GEPA's Pareto search runs over it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from asynctg.autograd import StringBasedFunction
from asynctg.engine import Engine
from asynctg.graph import Variable
from asynctg.graph import sum as tg_sum
from asynctg.optim import TextualGradientDescent
from asynctg.optim.aggregation import Strategy

__all__ = ["TextGradProposer"]

_PURPOSE = (
    "runs the system with this component on one task example and returns the evaluator's "
    "feedback on the system's output"
)


def _record_text(record: Mapping[str, Any]) -> str:
    return json.dumps(dict(record), ensure_ascii=False, indent=1, default=str)


class TextGradProposer:
    """GEPA's proposer replaced by asynctg's backward pass and TGD (see the module)."""

    def __init__(
        self,
        engine: Engine,
        *,
        aggregation: Strategy = "auto",
    ) -> None:
        self.engine = engine
        self.aggregation = aggregation

    async def propose(
        self,
        candidate: dict[str, str],
        dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components: list[str],
    ) -> dict[str, str]:
        """New texts for ``components`` that have records: backward, then one TGD step."""
        names = [n for n in components if dataset.get(n)]
        if not names:
            return {}
        params = {
            n: Variable(
                candidate[n],
                requires_grad=True,
                role_description=f"the text of component '{n}' of the system being optimized",
            )
            for n in names
        }
        losses: list[Variable] = []
        for name in names:
            for record in dataset[name]:
                feedback = str(record.get("Feedback", record.get("feedback", "")))
                example = Variable(
                    _record_text(record),
                    requires_grad=False,
                    role_description="one task example: its inputs, the outputs and feedback",
                )

                def give(_fb: str = feedback, **_: Any) -> str:
                    return _fb

                node = StringBasedFunction(give, function_purpose=_PURPOSE)
                losses.append(await node(inputs={"component": params[name], "example": example}))
        total = losses[0] if len(losses) == 1 else tg_sum(losses)
        await total.backward(self.engine)
        optimizer = TextualGradientDescent(
            parameters=list(params.values()), engine=self.engine, aggregation=self.aggregation
        )
        await optimizer.step()
        return {n: str(v.value) for n, v in params.items()}
