"""The token bucket the engine's scheduler paces rpm and tpm budgets with."""

from __future__ import annotations

__all__ = ["BUCKET_SECONDS", "TokenBucket"]

#: A bucket holds this many seconds of its rate (the grain providers enforce limits on).
BUCKET_SECONDS = 1.0


class TokenBucket:
    """``rate`` units a second, holding at most ``capacity``; may run into debt.

    Debt happens when a request costs more than the bucket holds (it is let through when the
    bucket is full) or when a reported usage exceeds the estimate charged before sending.
    """

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: float, now: float, *, level: float | None = None) -> None:
        if per_minute <= 0:
            raise ValueError(f"a budget must be positive, got {per_minute}")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * BUCKET_SECONDS)
        self.level = self.capacity if level is None else min(level, self.capacity)
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` can be taken (0 if now); oversized amounts wait for full."""
        self.refill(now)
        need = min(amount, self.capacity)
        # The tolerance absorbs float rounding in the refill, which could otherwise leave a
        # timer firing at "now" forever for a shortfall of 1e-15.
        if self.level >= need - 1e-9:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= amount

    def give_back(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)

    def correct(self, estimated: float, actual: float, now: float) -> None:
        """Charge ``actual`` instead of the ``estimated`` taken at admission."""
        if actual == estimated:
            return
        self.refill(now)
        if actual > estimated:
            self.take(actual - estimated)
        else:
            self.give_back(estimated - actual)

    @property
    def per_minute(self) -> float:
        return self.rate * 60.0
