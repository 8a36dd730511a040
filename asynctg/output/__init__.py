"""What a run writes, below everything that writes: atomic files, inline SVG charts and text safe
for a terminal. It imports nothing of asynctg but ``asynctg.errors``, so the run infrastructure
(``asynctg.runs``) and the load tests (``asynctg.loadtest``) share it without importing each
other.
"""

from asynctg.output.files import atomic_write_text, probe_writable
from asynctg.output.svg import line_chart_svg, xy_chart_svg
from asynctg.output.text import printable

__all__ = ["atomic_write_text", "line_chart_svg", "printable", "probe_writable", "xy_chart_svg"]
