"""``DataLoader``: minibatches with a private, seeded RNG whose state can be saved and restored.

>>> loader = DataLoader(list(range(5)), batch_size=2, shuffle=False)
>>> list(loader)
[[0, 1], [2, 3], [4]]
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

from asynctg.errors import ConfigError, require_int

__all__ = ["DataLoader"]

T = TypeVar("T")


class DataLoader(Generic[T]):
    """Batches of ``data``, reshuffled at the start of every pass when ``shuffle``.

    Shuffling uses its own ``random.Random(seed)``, never the global generator, so the same seed
    gives the same batches, and ``state_dict()`` / ``load_state_dict()`` carry the generator's
    state, the current order and the position: a run restored from a checkpoint continues with
    exactly the batches it would have seen.

    ``for batch in loader`` starts a new pass (``start_epoch()``) and yields lists of items;
    ``next_batch()`` continues the current pass (None at its end).

    >>> a = DataLoader(list(range(10)), batch_size=3, seed=7)
    >>> b = DataLoader(list(range(10)), batch_size=3, seed=7)
    >>> a.start_epoch(); _ = a.next_batch()
    >>> b.load_state_dict(a.state_dict())
    >>> a.next_batch() == b.next_batch()
    True
    """

    def __init__(
        self,
        data: Sequence[T],
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int | None = 0,
    ) -> None:
        require_int("batch_size", batch_size, 1)
        if len(data) == 0:
            raise ConfigError("the DataLoader got no data")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self._rng = random.Random(seed)
        self.order = list(range(len(data)))
        self.position = 0
        self.epoch = 0  # passes started

    def __len__(self) -> int:
        """Batches per pass."""
        return -(-len(self.data) // self.batch_size)

    def start_epoch(self) -> None:
        """Begin a new pass: reshuffle (if ``shuffle``) and go back to the first batch."""
        self.order = list(range(len(self.data)))
        if self.shuffle:
            self._rng.shuffle(self.order)
        self.position = 0
        self.epoch += 1

    def next_batch(self) -> list[T] | None:
        """The next batch of the current pass, or None when the pass is over."""
        if self.position >= len(self.order):
            return None
        chosen = self.order[self.position : self.position + self.batch_size]
        self.position += len(chosen)
        return [self.data[i] for i in chosen]

    def __iter__(self) -> Iterator[list[T]]:
        self.start_epoch()
        while (batch := self.next_batch()) is not None:
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state: the RNG's state, the current order, the position and the pass."""
        version, internal, gauss = self._rng.getstate()
        return {
            "rng": [version, list(internal), gauss],
            "order": list(self.order),
            "position": self.position,
            "epoch": self.epoch,
            "size": len(self.data),
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``; ConfigError if it is for other data or batch size."""
        if state.get("size") != len(self.data) or state.get("batch_size") != self.batch_size:
            raise ConfigError(
                "the saved loader state is for another data set or batch size "
                f"({state.get('size')} items in batches of {state.get('batch_size')}, here "
                f"{len(self.data)} in batches of {self.batch_size})"
            )
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self.order = list(state["order"])
        self.position = int(state["position"])
        self.epoch = int(state["epoch"])
