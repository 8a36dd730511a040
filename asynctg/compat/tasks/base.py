"""``textgrad.tasks.base``: the ``Dataset`` base class and the ``DataLoader`` of training loops.

>>> from asynctg.compat.tasks.base import DataLoader
>>> list(DataLoader([("q1", "a1"), ("q2", "a2"), ("q3", "a3")], batch_size=2, shuffle=False))
[(('q1', 'q2'), ('a1', 'a2')), (('q3',), ('a3',))]
"""

from __future__ import annotations

import abc
import random
from collections.abc import Sequence
from typing import Any

from asynctg.errors import ConfigError

__all__ = ["DataLoader", "Dataset"]


class Dataset(abc.ABC):
    """What TextGrad's data sets derive from: ``ds[i]`` and ``len(ds)``."""

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Any: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...


class DataLoader:
    """Batches of a dataset, iterated as TextGrad's ``DataLoader`` iterates them.

    ``iter()`` reshuffles (when ``shuffle``) and restarts; each batch holds ``batch_size``
    items (the last one may hold fewer). When items are tuples, a batch is a tuple of columns,
    ``(xs, ys)``, ready for ``for x, y in zip(xs, ys)``; otherwise it is a list of items
    (TextGrad: a numpy array). Shuffling uses ``random`` (the module's global generator, as
    TextGrad uses numpy's), or the ``rng`` given. The loader is its own iterator, as in
    TextGrad, so two loops over it at once share one position.
    """

    def __init__(
        self,
        data: Sequence[Any],
        batch_size: int = 32,
        shuffle: bool = True,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            # TextGrad loops forever on batch_size=0; refuse it instead.
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.indices = list(range(len(data)))
        self.current_index = 0
        self._rng = rng

    def __iter__(self) -> DataLoader:
        if self.shuffle:
            (self._rng or random).shuffle(self.indices)
        self.current_index = 0
        return self

    def __next__(self) -> tuple[tuple[Any, ...], ...] | list[Any]:
        if self.current_index >= len(self.data):
            raise StopIteration
        chosen = self.indices[self.current_index : self.current_index + self.batch_size]
        self.current_index += self.batch_size
        batch = [self.data[i] for i in chosen]
        if isinstance(batch[0], tuple):
            return tuple(zip(*batch, strict=False))  # ragged tuples truncate, as in TextGrad
        return batch

    def __len__(self) -> int:
        """Batches per pass (TextGrad's loader has no length; progress bars like one)."""
        return -(-len(self.data) // self.batch_size)
