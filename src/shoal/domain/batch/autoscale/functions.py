"""The built-in functions, on evaluated arguments. A failure raises ValueError; the evaluator positions it.

- avg, len, max, min, norm, range, std, sum take a doubleVecList: doubles and doubleVecs, flattened.
- lg, ln, log, ceil, floor, round: of one double, a double; of anything else, a doubleVec, component-wise.
- percentile(v, p) is the nearest-rank percentile: the smallest element with at least p% of v at or below it.
- std is the sample standard deviation (n - 1), so it needs two values.
- round rounds halfway away from zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from shoal.domain.batch.autoscale.values import Value


def flatten(args: Sequence[Value]) -> list[float]:
    out: list[float] = []
    for a in args:
        if isinstance(a, float):
            out.append(a)
        elif isinstance(a, tuple):
            out.extend(a)
        else:  # the checker lets only doubles and doubleVecs through
            raise ValueError("a doubleVecList holds doubles and doubleVecs")
    return out


def _nonempty(name: str, xs: list[float]) -> list[float]:
    if not xs:
        raise ValueError(f"{name}() of an empty list")
    return xs


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        raise ValueError(f"std() needs at least two values, not {len(xs)}")
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) * (x - mean) for x in xs) / (len(xs) - 1))


LIST: dict[str, Callable[[list[float]], float]] = {
    "avg": lambda xs: sum(_nonempty("avg", xs)) / len(xs),
    "len": lambda xs: float(len(xs)),
    "max": lambda xs: max(_nonempty("max", xs)),
    "min": lambda xs: min(_nonempty("min", xs)),
    "norm": lambda xs: math.sqrt(sum(x * x for x in xs)),
    "range": lambda xs: max(_nonempty("range", xs)) - min(xs),
    "std": _std,
    "sum": lambda xs: float(sum(xs)),
}


def _log(name: str, log: Callable[[float], float]) -> Callable[[float], float]:
    def f(x: float) -> float:
        if x <= 0:
            raise ValueError(f"{name}() of {x:g}: the logarithm of a number that is not positive")
        return log(x)
    return f


def _round(x: float) -> float:
    whole = math.floor(abs(x))
    return math.copysign(whole + 1 if abs(x) - whole >= 0.5 else whole, x) + 0.0


ELEMENTWISE: dict[str, Callable[[float], float]] = {
    "lg": _log("lg", math.log2),
    "ln": _log("ln", math.log),
    "log": _log("log", math.log10),
    "ceil": lambda x: float(math.ceil(x)),
    "floor": lambda x: float(math.floor(x)),
    "round": _round,
}


def percentile(v: tuple[float, ...], p: float) -> float:
    if not v:
        raise ValueError("percentile() of an empty doubleVec")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile() takes a percent between 0 and 100, not {p:g}")
    ordered = sorted(v)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def val(v: tuple[float, ...], i: float) -> float:
    index = int(i)  # toward zero, as a cast does
    if not 0 <= index < len(v):
        raise ValueError(f"val(): index {i:g} is outside the doubleVec (length {len(v)})")
    return v[index]
