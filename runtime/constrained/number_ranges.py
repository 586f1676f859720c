"""Regexes for bounded JSON numbers, for grammar backends whose schema compiler ignores
`minimum` / `maximum` (outlines-core writes any integer for a bounded one)."""

from __future__ import annotations

import math


def _nonneg_range(lo: int, hi: int) -> str:
    """0 <= lo <= hi: alternatives of equal-length digit patterns covering exactly [lo, hi]."""
    stops = {hi}
    k = 1
    while True:  # lo with its last k digits turned to 9s
        s = str(lo)
        stop = int(s[:-k] + "9" * k) if k < len(s) else 10**k - 1
        if not lo <= stop < hi:
            break
        stops.add(stop)
        k += 1
    k = 1
    while True:  # hi + 1 with its last k digits turned to 0s, minus one
        stop = (hi + 1) - (hi + 1) % 10**k - 1
        if not lo < stop <= hi:
            break
        stops.add(stop)
        k += 1
    parts, start = [], lo
    for stop in sorted(stops):
        a, b = str(start), str(stop)
        if len(a) < len(b):  # only when start is 0-padded away; split at the digit count
            parts.append(_nonneg_range(start, 10 ** len(a) - 1))
            parts.append(_nonneg_range(10 ** len(a), stop))
        else:
            parts.append("".join(x if x == y else f"[{x}-{y}]" for x, y in zip(a, b)))
        start = stop + 1
    return "|".join(parts)


def integer_regex(minimum: float | None, maximum: float | None) -> str:
    """JSON integers in [minimum, maximum] (either may be None: unbounded)."""
    lo = None if minimum is None else math.ceil(minimum)
    hi = None if maximum is None else math.floor(maximum)
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"minimum {minimum} is above maximum {maximum}")
    parts = []
    if lo is None or lo < 0:  # negatives: -n with n in [max(1, -hi), -lo]
        n_lo = 1 if hi is None or hi >= 0 else -hi
        if lo is None:
            parts.append(f"-({_at_least(n_lo)})")
        else:
            parts.append(f"-({_nonneg_range(n_lo, -lo)})")
    if hi is None or hi >= 0:
        p_lo = 0 if lo is None or lo < 0 else lo
        parts.append(_at_least(p_lo) if hi is None else _nonneg_range(p_lo, hi))
    return "(" + "|".join(f"({p})" for p in parts) + ")"


def _at_least(n: int) -> str:
    """Integers >= n >= 0 without leading zeros."""
    if n == 0:
        return "0|[1-9][0-9]*"
    digits = len(str(n))
    return f"{_nonneg_range(n, 10**digits - 1)}|[1-9][0-9]{{{digits},}}"


FRACTION_DIGITS = 6  # a greedy model can otherwise write "100.000000..." until it runs out


def number_regex(minimum: float | None, maximum: float | None) -> str:
    """JSON numbers (no exponent, at most FRACTION_DIGITS decimals) in [minimum, maximum];
    bounds must be whole."""
    for b in (minimum, maximum):
        if b is not None and b != int(b):
            raise ValueError(
                f"bounds of a number must be whole here (got minimum {minimum}, maximum {maximum})"
            )
    if minimum is not None and minimum < 0:
        if maximum is not None and maximum < 0:
            raise ValueError(f"a number range below zero is not supported (maximum {maximum})")
        negative = f"-{_nonneg_number_regex(0, -int(minimum))}"
        return f"({negative}|{_nonneg_number_regex(0, maximum)})"
    return _nonneg_number_regex(minimum, maximum)


def _nonneg_number_regex(minimum: float | None, maximum: float | None) -> str:
    lo = 0 if minimum is None else int(minimum)
    frac = f"(\\.[0-9]{{1,{FRACTION_DIGITS}}})?"
    if maximum is None:
        return f"(({_at_least(lo)}){frac})"
    hi = int(maximum)
    below = f"({_nonneg_range(lo, hi - 1)}){frac}|" if hi > lo else ""
    return f"({below}{hi}(\\.0{{1,{FRACTION_DIGITS}}})?)"
