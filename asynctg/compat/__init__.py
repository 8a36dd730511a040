"""TextGrad 0.1.8's synchronous API on top of asynctg: run a TextGrad script unchanged.

The way to switch: ``python -m asynctg.compat SCRIPT ARGS`` (or ``asynctg textgrad SCRIPT
ARGS``), or ``%load_ext asynctg.compat`` in a notebook's first cell: ``textgrad`` and every
``textgrad.X`` then resolve to this package (``asynctg.compat._hook``). Importing it directly
works too:

::

    import asynctg.compat as tg                    # was: import textgrad as tg

    engine = tg.get_engine("gpt-4o")               # OPENAI_BASE_URL / OPENAI_API_KEY
    tg.set_backward_engine(engine, override=True)
    model = tg.BlackboxLLM(engine, system_prompt)
    response = model(x)                            # blocks, as in TextGrad
    loss = eval_fn(inputs=dict(prediction=response, ground_truth_answer=y))
    tg.sum(losses).backward()                      # the feedback calls run concurrently
    optimizer.step()

Every blocking call runs its native coroutine on one private event loop in a daemon thread
(see ``asynctg.compat._loop``), so ``backward()`` and ``step()`` fan out concurrently inside,
and calls from many threads at once (a ``ThreadPoolExecutor`` evaluating a dataset) share one
scheduler and one connection pool. Calls made from a thread running its own loop (a Jupyter
cell) work too. A call returns a pending variable at once and runs in the background, seeing
its inputs as they were when it was made. The remaining differences from TextGrad are listed in
docs/textgrad-deviations.md.
"""

from __future__ import annotations

from asynctg.compat import (
    autograd,
    config,
    defaults,
    engine,
    engine_experimental,
    loss,
    model,
    optimizer,
    tasks,
    variable,
)
from asynctg.compat._log import CustomJsonFormatter, logger
from asynctg.compat._loop import shutdown
from asynctg.compat.autograd import aggregate, sum
from asynctg.compat.config import SingletonBackwardEngine, set_backward_engine
from asynctg.compat.engine import Engine, EngineLM, get_engine
from asynctg.compat.loss import TextLoss
from asynctg.compat.model import BlackboxLLM
from asynctg.compat.optimizer import TGD, TextualGradientDescent
from asynctg.compat.variable import Variable

#: TextGrad's JSON formatter instance (TextGrad attaches it to its log file; nothing here does).
cf = CustomJsonFormatter()
singleton_backward_engine = SingletonBackwardEngine()
#: The TextGrad API version this layer follows (asynctg's own is ``asynctg.__version__``).
__version__ = "0.1.8"

__all__ = [
    "TGD",
    "BlackboxLLM",
    "CustomJsonFormatter",
    "Engine",
    "EngineLM",
    "SingletonBackwardEngine",
    "TextLoss",
    "TextualGradientDescent",
    "Variable",
    "__version__",
    "aggregate",
    "autograd",
    "cf",
    "config",
    "defaults",
    "engine",
    "engine_experimental",
    "get_engine",
    "logger",
    "loss",
    "model",
    "optimizer",
    "set_backward_engine",
    "shutdown",
    "singleton_backward_engine",
    "sum",
    "tasks",
    "variable",
]


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext asynctg.compat``: in this kernel, ``import textgrad`` gives asynctg.compat."""
    from asynctg.compat._hook import install

    install()


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext asynctg.compat``: ``import textgrad`` is TextGrad's again."""
    from asynctg.compat._hook import uninstall

    uninstall()
