"""Running a checked formula: statement by statement, until the end or ``stop()``.

Every double stays finite: a division by zero, an overflow or a logarithm of zero is an evaluation error at the
operator or function that caused it (Azure reports evaluation errors with their line and column too).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import datetime

from shoal.domain.batch.autoscale import functions as fn
from shoal.domain.batch.autoscale import names as nm
from shoal.domain.batch.autoscale import syntax as sx
from shoal.domain.batch.autoscale.errors import EVALUATION_ERROR, FormulaError, located
from shoal.domain.batch.autoscale.sampling import Metrics, SampleError, Series
from shoal.domain.batch.autoscale.values import (
    MAX_INTERVAL,
    MAX_TIMESTAMP,
    Interval,
    Timestamp,
    Value,
    format_value,
    parse_time,
    type_name,
)

INSUFFICIENT = "Autoscale evaluation failed due to insufficient sample data"
COMPARE: dict[str, Callable[[object, object], bool]] = {
    "<": lambda a, b: a < b,  # type: ignore[operator]
    "<=": lambda a, b: a <= b,  # type: ignore[operator]
    ">": lambda a, b: a > b,  # type: ignore[operator]
    ">=": lambda a, b: a >= b,  # type: ignore[operator]
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


class Stopped(Exception):
    """``stop()`` was evaluated."""


class Machine:
    """The state of one evaluation: the service-defined variables, the formula's own, the metrics."""

    def __init__(self, text: str, metrics: Metrics, *, current_dedicated: int, current_low_priority: int,
                 rng: random.Random) -> None:
        self.text = text
        self.metrics = metrics
        self.now = Timestamp.of(metrics.now)
        self.rng = rng
        self.targets = {name: float(current_dedicated) for name in (nm.TARGET_DEDICATED, "$TargetDedicated")}
        self.targets.update({name: float(current_low_priority)
                             for name in (nm.TARGET_LOW_PRIORITY, "$TargetLowPriority")})
        self.assigned_targets: set[str] = set()
        self.deallocation: str | None = None
        self.variables: dict[str, Value] = {}
        values = metrics.values
        dedicated = values.get("CurrentDedicatedNodes", float(current_dedicated))
        low = values.get("CurrentLowPriorityNodes", float(current_low_priority))
        self.plain = {"$TaskSlotsPerNode": values.get("TaskSlotsPerNode", 1.0),
                      "$CurrentDedicatedNodes": dedicated, "$CurrentLowPriorityNodes": low,
                      "$CurrentDedicated": dedicated, "$CurrentLowPriority": low,
                      "$UsableNodeCount": values.get("UsableNodeCount", dedicated + low)}
        self._series: dict[str, Series] = {}
        # Every sampled-metric call, in order: what it asked for and what it got (shown by ``explain``).
        self.reads: list[dict[str, object]] = []

    def fail(self, at: int, detail: str, prefix: str = "") -> FormulaError:
        return located(EVALUATION_ERROR, self.text, at, detail, prefix=prefix)

    def run(self, statements: tuple[sx.Statement, ...]) -> bool:
        """Run every statement; True if ``stop()`` ended the run early."""
        for statement in statements:
            try:
                value = self.expr(statement.value)
            except Stopped:
                return True
            if isinstance(statement, sx.Assign):
                self.assign(statement, value)
        return False

    def assign(self, statement: sx.Assign, value: Value) -> None:
        name = statement.name
        if name in nm.TARGETS:
            self.targets[name] = self.double(value, statement.value.pos)
            self.assigned_targets.add(name)
        elif name == nm.DEALLOCATION:
            option = str(value).lower()
            if option not in nm.DEALLOCATION_OPTIONS:
                raise self.fail(statement.value.pos, f"'{value}' is not a node deallocation option (one of "
                                                     f"{', '.join(nm.DEALLOCATION_OPTIONS)})")
            self.deallocation = option
        else:
            self.variables[name] = value

    def double(self, value: Value, at: int) -> float:
        if not isinstance(value, float):
            raise self.fail(at, f"expected a double, found a {type_name(value)}")
        return value

    # --- expressions ----------------------------------------------------------------------------------------
    def expr(self, node: sx.Expr) -> Value:
        match node:
            case sx.Number() | sx.String():
                return node.value
            case sx.Name():
                return self.name(node)
            case sx.Unary():
                value = self.expr(node.operand)
                if isinstance(value, Interval):
                    return Interval(-value.ticks)
                x = self.double(value, node.pos)
                return -x if node.op == "-" else float(x == 0)
            case sx.Chain():
                return self.chain(node)
            case sx.Ternary():
                condition = self.double(self.expr(node.condition), node.condition.pos)
                return self.expr(node.then if condition != 0 else node.otherwise)
            case sx.Call():
                return self.call(node)
            case sx.Method():
                return self.method(node)
            case sx.Field():
                target = self.expr(node.target)
                if not isinstance(target, Timestamp):
                    raise self.fail(node.field_pos, f"a {type_name(target)} has no member '{node.field}'")
                return _field(target.datetime(), node.field)
        raise AssertionError(node)  # pragma: no cover

    def name(self, node: sx.Name) -> Value:
        name = node.name
        if name in nm.INTERVALS:
            return Interval(nm.INTERVALS[name])
        if name.lower() in nm.DEALLOCATION_OPTIONS:
            return name.lower()
        if name in self.targets:
            return self.targets[name]
        if name == nm.DEALLOCATION:
            return self.deallocation or nm.DEFAULT_DEALLOCATION
        if name in self.plain:
            value = float(self.plain[name])
            if not math.isfinite(value):
                raise self.fail(node.pos, f"{name} has no value")
            return value
        if name in self.variables:
            return self.variables[name]
        raise self.fail(node.pos, f"'{name}' is not defined")

    def chain(self, node: sx.Chain) -> Value:
        op0 = node.ops[0]
        if op0 in ("&&", "||"):  # short-circuit, like C
            stop_at = 0.0 if op0 == "&&" else 1.0
            for operand in node.operands:
                if (self.double(self.expr(operand), operand.pos) != 0) == bool(stop_at):
                    return stop_at
            return 1.0 - stop_at
        left = self.expr(node.operands[0])
        for op, at, operand in zip(node.ops, node.op_positions, node.operands[1:], strict=True):
            right = self.expr(operand)
            if op in COMPARE:
                if type(left) is not type(right) or isinstance(left, tuple):
                    raise self.fail(at, f"'{op}' cannot compare a {type_name(left)} and a {type_name(right)}")
                left = float(COMPARE[op](left, right))
            else:
                left = self.arithmetic(op, left, right, at)
        return left

    def arithmetic(self, op: str, a: Value, b: Value, at: int) -> Value:
        if isinstance(a, float) and isinstance(b, float):
            return self.number(op, a, b, at)
        if isinstance(a, tuple) and isinstance(b, float) and op in "+-*/":
            return tuple(self.number(op, x, b, at) for x in a)
        if isinstance(a, tuple) and isinstance(b, tuple) and op in "+-*/":
            if len(a) != len(b):
                raise self.fail(at, f"'{op}' of doubleVecs of different lengths ({len(a)} and {len(b)})")
            return tuple(self.number(op, x, y, at) for x, y in zip(a, b, strict=True))
        if isinstance(a, Interval) and isinstance(b, float) and op in "*/":
            return self.scale(a, b, op, at)
        if isinstance(a, float) and isinstance(b, Interval) and op == "*":
            return self.scale(b, a, op, at)
        if isinstance(a, Interval) and isinstance(b, Interval) and op in "+-":
            return self.interval(a.ticks + b.ticks if op == "+" else a.ticks - b.ticks, at)
        if op == "+" and isinstance(a, Interval) and isinstance(b, Timestamp):
            a, b = b, a
        if isinstance(a, Timestamp) and isinstance(b, Interval) and op == "+":
            ticks = a.ticks + b.ticks
            if not 0 <= ticks <= MAX_TIMESTAMP:
                raise self.fail(at, "the timestamp is outside the years 1 to 9999")
            return Timestamp(ticks)
        if isinstance(a, Timestamp) and isinstance(b, Timestamp) and op == "-":
            return Interval(a.ticks - b.ticks)
        raise self.fail(at, f"'{op}' does not apply to a {type_name(a)} and a {type_name(b)}")

    def number(self, op: str, x: float, y: float, at: int) -> float:
        if op == "/" and y == 0:
            raise self.fail(at, "division by zero")
        r = x + y if op == "+" else x - y if op == "-" else x * y if op == "*" else x / y
        if not math.isfinite(r):
            raise self.fail(at, f"'{op}' overflows: the result is too large for a double")
        return r

    def scale(self, i: Interval, factor: float, op: str, at: int) -> Interval:
        if op == "/" and factor == 0:
            raise self.fail(at, "division by zero")
        ticks = i.ticks * factor if op == "*" else i.ticks / factor
        if not math.isfinite(ticks) or abs(ticks) > MAX_INTERVAL:
            raise self.fail(at, "the timeinterval is too long")
        return self.interval(round(ticks), at)

    def interval(self, ticks: int, at: int) -> Interval:
        if abs(ticks) > MAX_INTERVAL:
            raise self.fail(at, "the timeinterval is too long")
        return Interval(ticks)

    # --- functions and sample methods -----------------------------------------------------------------------
    def call(self, node: sx.Call) -> Value:
        name = node.function
        if name == "stop":
            raise Stopped
        if name == "rand":
            return self.rng.random()
        args = [self.expr(a) for a in node.args]
        try:
            if name == "time":
                if not args or args[0] == "":
                    return self.now
                when = parse_time(str(args[0]))
                if when is None:
                    raise ValueError(f"time(): '{args[0]}' is not a W3C-DTF or RFC 1123 date and time")
                return when
            if name in fn.LIST:
                return self.finite(fn.LIST[name](fn.flatten(args)), node, name)
            if name in fn.ELEMENTWISE:
                f = fn.ELEMENTWISE[name]
                if len(args) == 1 and isinstance(args[0], float):
                    return self.finite(f(args[0]), node, name)
                return tuple(self.finite(f(x), node, name) for x in fn.flatten(args))
            vec, number = args
            if not isinstance(vec, tuple) or not isinstance(number, float):
                raise ValueError(f"{name}() takes a doubleVec and a double")
            return fn.percentile(vec, number) if name == "percentile" else fn.val(vec, number)
        except (ValueError, OverflowError) as exc:
            raise self.fail(node.pos, str(exc)) from None

    def finite(self, x: float, node: sx.Call, name: str) -> float:
        if not math.isfinite(x):
            raise self.fail(node.pos, f"{name}() overflows: the result is too large for a double")
        return x

    def series(self, name: str) -> Series:
        if name not in self._series:
            self._series[name] = Series.of(name, list(self.metrics.series.get(name[1:], ())), self.metrics)
        return self._series[name]

    def method(self, node: sx.Method) -> Value:
        receiver = node.receiver
        if not isinstance(receiver, sx.Name) or receiver.name not in nm.SAMPLED:
            raise self.fail(node.method_pos, f"'{node.method}' applies to sampled metrics only")
        series = self.series(receiver.name)
        args = [self.expr(a) for a in node.args]
        value = self._sample_call(node, series, args)
        call = f"{node.method}({', '.join(format_value(a) for a in args)})"
        self.reads.append({"metric": receiver.name, "call": call, "position": node.pos,
                           "result": format_value(value), "samplesVisible": len(series.values)})
        return value

    def _sample_call(self, node: sx.Method, series: Series, args: list[Value]) -> Value:
        try:
            match node.method, args:
                case "GetSamplePeriod", []:
                    return Interval(series.period)
                case "Count", []:
                    return float(len(series.values))
                case "HistoryBeginTime", []:
                    return series.history_begin()
                case "GetSamplePercent", [Timestamp() | Interval() as start, *rest]:
                    end = rest[0] if rest else None
                    return series.sample_percent(start, _when(end))
                case "GetSample", [float(count)]:
                    return series.last(count)
                case "GetSample", [Timestamp() | Interval() as start]:
                    return series.get(start, None, None)
                case "GetSample", [Timestamp() | Interval() as start, float(percent)]:
                    return series.get(start, None, percent)
                case "GetSample", [Timestamp() | Interval() as start, Timestamp() | Interval() as end]:
                    return series.get(start, end, None)
                case "GetSample", [Timestamp() | Interval() as start, Timestamp() | Interval() as end,
                                   float(percent)]:
                    return series.get(start, end, percent)
        except SampleError as exc:
            raise self.fail(node.method_pos, str(exc), prefix=INSUFFICIENT) from None
        except ValueError as exc:
            raise self.fail(node.method_pos, str(exc)) from None
        raise self.fail(node.method_pos, f"{node.method}() cannot take these arguments "
                                         f"({', '.join(type_name(a) for a in args)})")


def _when(value: Value | None) -> Timestamp | Interval | None:
    return value if isinstance(value, Timestamp | Interval) else None


def _field(when: datetime, field: str) -> float:
    if field == "weekday":
        return float((when.weekday() + 1) % 7)  # Sunday 0, Monday 1, ... Saturday 6
    return float(getattr(when, field))
