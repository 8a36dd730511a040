"""Text safe to show: model-written text stripped of terminal control sequences."""

from __future__ import annotations

import re

__all__ = ["printable"]

# ESC sequences (CSI, OSC up to BEL or ST, two-byte ones) and the other C0/C1 controls but
# newline and tab.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: cursor, colours, clear screen
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window title, clipboard, links
    r"|\x1b[@-_]"  # other two-byte escapes
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"  # remaining C0/C1 controls
)


def printable(text: str) -> str:
    """``text`` without terminal control sequences (safe to print to a terminal)."""
    return _CONTROL.sub("", text)
