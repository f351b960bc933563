"""Human-readable numbers with units, shared by the CLI and the dashboard, and sizes in bytes read
from text (:func:`parse_bytes`: the cache budget, the dashboard's memory and disk budgets).

Two rules hold for every share and change the page or the CLI prints, and they live here only:

* a share is shown as ``100 %`` only when everything is kept and as ``0 %`` only when nothing is
  (89,213 of 89,216 dims is ``99.997 %``, not ``100.0 %``): digits are added until the rounding
  no longer reaches either end;
* a change is signed: ``+`` for an increase, ``-`` for a saving, with the same digit rule, so a
  small increase is never printed as a saving (the dashboard draws ``+`` red and ``-`` green).
"""

from __future__ import annotations

import math

__all__ = ["format_bytes", "format_change", "format_count", "format_fraction", "format_percent", "parse_bytes"]

#: Most digits after the decimal point a share or change is printed with.
MAX_DIGITS = 9


def format_bytes(n: float) -> str:
    """Bytes in binary units: ``1536 -> '1.5 KiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_count(n: float, unit: str = "") -> str:
    """Counts with k/M/G suffixes: ``109_482_240 -> '109.5M'``; small counts exact."""
    n = float(n)
    suffix = f" {unit}" if unit else ""
    if abs(n) < 10_000:
        return f"{int(n):,}{suffix}" if n == int(n) else f"{n:.3g}{suffix}"
    for div, s in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{s}{suffix}"
    raise AssertionError("unreachable")


def _fixed(p: float, start: int, avoid_hundred: bool) -> str:
    """``|p|`` (a percentage) with ``start`` or more digits after the point: as many as it takes for
    the text not to read 0 (``p`` is not 0) nor, with ``avoid_hundred``, 100 (``p`` is not 100).
    Past :data:`MAX_DIGITS` the text is clamped to the nearest value that still says so."""
    a = abs(p)
    digits = start
    while digits < MAX_DIGITS and (round(a, digits) == 0 or (avoid_hundred and round(a, digits) == 100 != a)):
        digits += 1
    step = 10.0**-digits
    if a < 100 and avoid_hundred:
        a = min(a, 100 - step)
    return f"{max(a, step):.{digits}f}"


def format_percent(x: float | None) -> str:
    """A share (``0.206 -> '20.6 %'``), with enough digits that it reads ``100 %`` only when ``x``
    is 1 and ``0 %`` only when ``x`` is 0; ``'n/a'`` for ``None`` or NaN.

    One decimal at 10 % and above, two below 10 %, two significant digits below 0.01 %, more
    where rounding would reach 100.
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    p = 100 * float(x)
    if p == 0:
        return "0.0 %"
    if math.isinf(p):
        return "∞ %" if p > 0 else "-∞ %"
    a = abs(p)
    if a < 10.0 ** (1 - MAX_DIGITS):
        return f"{p:.1e} %"
    start = 1 if a >= 10 else 2 if a >= 0.01 else 1 - math.floor(math.log10(a))
    return f"{'-' if p < 0 else ''}{_fixed(p, start, avoid_hundred=True)} %"


def format_fraction(x: float | None, digits: int = 3) -> str:
    """A share in [0, 1] as a plain number (a Jaccard index): ``digits`` decimals, more where rounding
    would read 1 (``x`` is not 1) or 0 (``x`` is not 0); ``'n/a'`` for ``None`` or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    x = float(x)
    if not 0 < x < 1:
        return f"{x:.{digits}f}"
    d = digits
    while d < MAX_DIGITS + 2 and (round(x, d) == 0 or round(x, d) == 1):
        d += 1
    step = 10.0**-d
    return f"{min(max(x, step), 1 - step):.{d}f}"


def format_change(after: float, before: float) -> str:
    """The relative change from ``before`` to ``after`` as a signed percentage: ``'+0.5 %'`` for an
    increase, ``'-92.4 %'`` for a saving, ``''`` when nothing changes or ``before`` is 0.

    A change that is not 0 never reads 0, and a saving short of everything never reads -100 %.
    """
    before, after = float(before), float(after)
    if before == 0 or after == before:
        return ""
    change = 100 * (after - before) / before
    return f"{'+' if change > 0 else '-'}{_fixed(change, 1, avoid_hundred=change < 0)} %"


def parse_bytes(text: str) -> int:
    """``"512M"`` -> 536870912; plain digits are bytes.

    Raises:
        ValueError: for text that is not a size.
    """
    t = str(text).strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}.get(t[-1:], 1)
    number = t[:-1] if scale > 1 else t
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a size in bytes: {text!r} (e.g. 16G, 512M or 1000000).") from None
    if value < 0:
        raise ValueError(f"a size in bytes cannot be negative: {text!r}.")
    return int(value * scale)
