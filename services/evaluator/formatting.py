"""Numbers for people, as the effect report and its warnings write them.

Three significant digits by default; an estimate and its CI share the decimals that the
CI's precision supports (two significant digits of its half-width); a p-value below
0.0001 is "< 0.0001"; a typographic minus; thousands separators; a number that rounds
to zero is "0" (never "0.0000" or "−0.00"), one below 0.001 is written 1.2×10⁻⁵.
"""

from __future__ import annotations

import math

MINUS = "\u2212"
MAX_DECIMALS = 8


SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def _scientific(x: float) -> str:
    """Two significant digits times a power of ten: 1.2×10⁻⁵."""
    exponent = math.floor(math.log10(abs(x)))
    mantissa = abs(x) / 10.0**exponent
    if round(mantissa, 1) >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return (MINUS if x < 0 else "") + f"{mantissa:.1f}×10" + str(exponent).translate(SUPERSCRIPT)


def _fixed(x: float, decimals: int) -> str:
    decimals = max(0, min(MAX_DECIMALS, decimals))
    text = f"{abs(x):,.{decimals}f}"
    if not any(c in "123456789" for c in text):
        return "0"
    if abs(x) < 1e-3:  # no runs of zeros after the decimal point
        return _scientific(x)
    return (MINUS if x < 0 else "") + text


def decimals_for(x: float, digits: int = 3) -> int:
    """Decimals that show ``digits`` significant digits of ``x`` (0 for |x| ≥ 10^digits)."""
    if not math.isfinite(x) or x == 0:
        return 0
    return max(0, digits - 1 - math.floor(math.log10(abs(x))))


def num(x: float, digits: int = 3) -> str:
    """``x`` with at most ``digits`` significant digits, trailing zeros dropped (integers
    of 10^digits and more in full): 1.0 → "1", 0.2504 → "0.25", 21.69 → "21.7"."""
    if not math.isfinite(x):
        return "n/a"
    text = _fixed(x, decimals_for(x, digits))
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def signed(x: float, digits: int = 3) -> str:
    """Like :func:`num` with an explicit "+" on positive numbers."""
    text = num(x, digits)
    return ("+" + text) if x > 0 and text != "0" else text


def estimate(value: float, lower: float, upper: float) -> tuple[str, str, str]:
    """An estimate and its CI bounds with the decimals the CI supports: two significant
    digits of the half-width (at least three significant digits of the value when the CI
    is degenerate)."""
    half = (upper - lower) / 2.0
    if math.isfinite(half) and half > 0:
        decimals = 1 - math.floor(math.log10(half))
    else:
        decimals = decimals_for(value)
    return _fixed(value, decimals), _fixed(lower, decimals), _fixed(upper, decimals)


def ci(value: float, lower: float, upper: float) -> str:
    """The CI alone, "lo to hi", with the decimals :func:`estimate` gives."""
    _, lo, hi = estimate(value, lower, upper)
    return f"{lo} to {hi}"


def point(value: float, lower: float, upper: float) -> str:
    """The estimate alone, with the decimals :func:`estimate` gives."""
    return estimate(value, lower, upper)[0]


def with_ci(value: float, lower: float, upper: float, sign: bool = False) -> str:
    """"v (95% CI lo to hi)"; ``sign`` writes "+" on a positive value."""
    v, lo, hi = estimate(value, lower, upper)
    if sign and value > 0 and v != "0":
        v = "+" + v
    return f"{v} (95% CI {lo} to {hi})"


def pct(share: float, digits: int = 3, sign: bool = False) -> str:
    """A share as a percentage with ``digits`` significant digits (at most one decimal
    for shares of 1% or more, trailing zeros dropped): 0.536 → "53.6%", 0.5 → "50%"."""
    if not math.isfinite(share):
        return "n/a"
    value = 100.0 * share
    decimals = min(decimals_for(value, digits), 1) if abs(value) >= 1 else decimals_for(value, 2)
    text = _fixed(value, decimals)
    if "." in text and "×" not in text:
        text = text.rstrip("0").rstrip(".")
    if sign and value > 0 and text != "0":
        text = "+" + text
    return text + "%"


def pct_with_ci(share: float, lower: float, upper: float, sign: bool = False) -> str:
    """A relative change and its CI, in percent, with the decimals the CI supports."""
    v, lo, hi = estimate(100.0 * share, 100.0 * lower, 100.0 * upper)
    if sign and share > 0 and v != "0":
        v = "+" + v
    return f"{v}% (95% CI {lo}% to {hi}%)"


def p_value(p: float) -> str:
    """"p < 0.0001", "p = 0.0023", "p = 0.41", "p > 0.99"."""
    if not math.isfinite(p):
        return "p n/a"
    if p < 0.0001:
        return "p < 0.0001"
    if p < 0.01:
        return f"p = {p:.4f}".rstrip("0")
    if p > 0.99:
        return "p > 0.99"
    return f"p = {p:.2f}"


def count(n: int | float) -> str:
    """An integer with thousands separators."""
    return f"{int(n):,}"
