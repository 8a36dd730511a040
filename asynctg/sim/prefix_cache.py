"""A provider-like prompt prefix cache: which leading part of a prompt was seen recently.

Providers bill the leading part of a prompt that matches a recent request at a lower price and
report it in the usage. The simulator keeps hashes of recent prefixes (never the text), each
alive for ``ttl`` seconds on the simulator's clock after its last use, at most ``max_entries``
of them (least recently used evicted first), so memory stays bounded whatever the traffic.

OpenAI (automatic): the prompt is cut into blocks of 128 tokens (512 characters of a canonical
rendering of the messages); a chain hash names each block together with everything before it.
A request reads the longest chain of blocks a recent request also had, reported only from
1,024 tokens on (8 blocks), so ``cached_tokens`` is 0 or 1,024 + k * 128, never more than the
prompt. Then all its blocks are remembered. ``prompt_cache_key`` is a routing hint: with
``shards`` > 1 the cache is split into that many machines; a request without a key lands on
machine ``seq % shards`` (providers spread a busy prefix over machines), one with a key always on
``hash(key) % shards``, so keyed requests share one machine and hit more often.

Anthropic (explicit): only prefixes ending at a block that carries ``cache_control`` (at most
four per request) are written, and only when they reach the model's minimum cacheable length
(1,024 tokens; 2,048 for Haiku models). A request reads the longest remembered prefix that ends
at one of its breakpoints or at one of the 19 blocks before a breakpoint (the provider's
look-back); the part between that read and its last eligible breakpoint is written. Input
tokens reported exclude both the read and the written tokens.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "ANTHROPIC_LOOKBACK_BLOCKS",
    "OPENAI_BLOCK_TOKENS",
    "OPENAI_MIN_CACHED_TOKENS",
    "CacheBlock",
    "PrefixCache",
    "anthropic_min_tokens",
]

OPENAI_BLOCK_TOKENS = 128
OPENAI_MIN_CACHED_TOKENS = 1024
_OPENAI_BLOCK_CHARS = OPENAI_BLOCK_TOKENS * 4
#: blocks before a breakpoint at which a read may also end
ANTHROPIC_LOOKBACK_BLOCKS = 20


def anthropic_min_tokens(model: str) -> int:
    """The smallest prefix Anthropic caches for ``model``: 2,048 tokens for Haiku, else 1,024."""
    return 2048 if "haiku" in model.lower() else 1024


@dataclass(frozen=True, slots=True)
class CacheBlock:
    """One block of an Anthropic prompt: its canonical bytes, its tokens (message framing
    included), and whether it carries ``cache_control``."""

    data: bytes
    tokens: int
    breakpoint: bool


def _chain(seed: bytes, parts: Sequence[bytes]) -> list[bytes]:
    keys: list[bytes] = []
    prev = seed
    for part in parts:
        h = hashlib.blake2b(prev, digest_size=16)
        h.update(part)
        prev = h.digest()
        keys.append(prev)
    return keys


class PrefixCache:
    """Remembered prefix hashes with a TTL on an injected clock and a bounded size."""

    __slots__ = ("_entries", "_now", "hits", "max_entries", "shards", "ttl", "writes")

    def __init__(
        self, *, ttl: float, max_entries: int, now: Callable[[], float], shards: int = 1
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.shards = shards
        self._now = now
        # key -> expiry time; insertion order is recency order (move_to_end on use)
        self._entries: OrderedDict[bytes, float] = OrderedDict()
        self.hits = 0
        self.writes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every prefix."""
        self._entries.clear()

    def _alive(self, key: bytes, now: float) -> bool:
        expiry = self._entries.get(key)
        if expiry is None:
            return False
        if expiry <= now:
            del self._entries[key]
            return False
        return True

    def _touch(self, keys: Sequence[bytes]) -> None:
        expiry = self._now() + self.ttl
        entries = self._entries
        for key in keys:
            entries[key] = expiry
            entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    # ----------------------------------------------------------------- OpenAI

    def openai_keys(self, text: str, *, shard: int) -> list[bytes]:
        """Chain keys of the whole 128-token blocks of a canonical prompt ``text``."""
        full = len(text) // _OPENAI_BLOCK_CHARS
        # cut by characters (the token estimate's unit), hash the UTF-8 of each piece
        parts = [
            text[i * _OPENAI_BLOCK_CHARS : (i + 1) * _OPENAI_BLOCK_CHARS].encode(
                "utf-8", "surrogatepass"
            )
            for i in range(full)
        ]
        return _chain(f"openai:{shard}".encode(), parts)

    def openai_lookup(self, keys: Sequence[bytes], prompt_tokens: int) -> int:
        """Cached tokens for a prompt with these block ``keys`` (nothing is remembered yet)."""
        now = self._now()
        blocks = 0
        for i in range(len(keys), 0, -1):
            if self._alive(keys[i - 1], now):
                blocks = i
                break
        cached = blocks * OPENAI_BLOCK_TOKENS
        if cached < OPENAI_MIN_CACHED_TOKENS:
            return 0
        # never more than the prompt, and still in whole blocks
        limit = prompt_tokens - prompt_tokens % OPENAI_BLOCK_TOKENS
        return min(cached, limit)

    def openai_commit(self, keys: Sequence[bytes], cached: int) -> None:
        """Remember a served prompt's blocks (and count a hit when ``cached`` > 0)."""
        if cached:
            self.hits += 1
        if len(keys) * OPENAI_BLOCK_TOKENS >= OPENAI_MIN_CACHED_TOKENS:
            self.writes += 1
            self._touch(keys)

    # ----------------------------------------------------------------- Anthropic

    def anthropic_plan(
        self, blocks: Sequence[CacheBlock], min_tokens: int
    ) -> tuple[int, int, list[bytes]]:
        """``(read_tokens, written_tokens, keys_to_remember)`` for a prompt; changes nothing."""
        if not any(b.breakpoint for b in blocks):
            return 0, 0, []
        keys = _chain(b"anthropic", [b.data for b in blocks])
        cumulative: list[int] = []
        total = 0
        for b in blocks:
            total += b.tokens
            cumulative.append(total)
        points = [i for i, b in enumerate(blocks) if b.breakpoint]
        now = self._now()
        read_at = -1
        for point in points:
            for j in range(max(0, point - ANTHROPIC_LOOKBACK_BLOCKS + 1), point + 1):
                if j > read_at and cumulative[j] >= min_tokens and self._alive(keys[j], now):
                    read_at = j
        read = cumulative[read_at] if read_at >= 0 else 0
        remember = [keys[read_at]] if read_at >= 0 else []
        written_to = -1
        for point in points:
            if point > read_at and cumulative[point] >= min_tokens:
                remember.append(keys[point])
                written_to = point
        written = cumulative[written_to] - read if written_to >= 0 else 0
        return read, written, remember

    def anthropic_commit(self, read: int, written: int, keys: Sequence[bytes]) -> None:
        """Remember (or refresh) what :meth:`anthropic_plan` planned, once the request is served."""
        if read:
            self.hits += 1
        if written:
            self.writes += 1
        if keys:
            self._touch(keys)

    def stats(self) -> dict[str, int]:
        """Entries held, hits and writes since the last reset."""
        return {"entries": len(self._entries), "hits": self.hits, "writes": self.writes}
