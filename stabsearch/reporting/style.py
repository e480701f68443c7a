"""The report's shared look: one colour per verdict, and how values are written on the page.

Every string a user wrote goes through :func:`esc` before it reaches the HTML
or a figure's text.

Example:
    >>> VERDICT_ORDER[:3]
    ('stable', 'spiky', 'diverged')
    >>> fmt(0.000123456), fmt(True), fmt(None), esc('<b a="1">')
    ('0.000123', 'yes', 'n/a', '&lt;b a=&quot;1&quot;&gt;')
"""

from __future__ import annotations

import html
import math
from typing import Any

#: One colour per verdict, used by every figure.
VERDICT_COLORS: dict[str, str] = {
    "stable": "#2e9d46",
    "spiky": "#f29d0c",
    "diverged": "#d62728",
    "plateau": "#8e5bc4",
    "slow": "#9fb7cf",
    "failed": "#8a8a8a",
}
VERDICT_ORDER = tuple(VERDICT_COLORS)


def sig(value: float | None, digits: int = 5) -> float | None:
    """``value`` rounded to ``digits`` significant digits for compact JSON; non-finite and non-positive
    values (gaps on a log axis) become None.

    Example:
        >>> sig(0.123456789), sig(float("nan")), sig(0.0)
        (0.12346, None, None)
    """
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return float(f"{value:.{digits}g}")


def fmt(value: Any) -> str:
    """``value`` as the page shows it: floats to 3 significant digits, booleans as yes/no, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def esc(value: Any) -> str:
    """``str(value)`` escaped for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def duration(seconds: float | None) -> str:
    """Seconds in the unit that reads best: s, min or h.

    Example:
        >>> duration(12.34), duration(600), duration(7200), duration(None)
        ('12.3 s', '10.0 min', '2.0 h', 'n/a')
    """
    if seconds is None:
        return "n/a"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
