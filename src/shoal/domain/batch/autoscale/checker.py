"""Static types: every expression's type is known before the formula runs, so type errors are found by ``parse``.

A formula is straight-line code, so a variable's type at any point is the type of its latest assignment. The
operator table is the documented one::

    double (+ - * /) double -> double         timeinterval (* /) double -> timeinterval
    double * timeinterval -> timeinterval     timeinterval (+ -) timeinterval -> timeinterval
    doubleVec (+ - * /) double -> doubleVec   timeinterval + timestamp, timestamp + timeinterval -> timestamp
    doubleVec (+ - * /) doubleVec -> doubleVec  timestamp - timestamp -> timeinterval
    -double, !double -> double                -timeinterval -> timeinterval
    comparisons of two doubles, strings, timestamps or timeintervals -> double
    double (&& ||) double -> double           double ? T : T -> T
"""

from __future__ import annotations

from shoal.domain.batch.autoscale import names as nm
from shoal.domain.batch.autoscale import syntax as sx
from shoal.domain.batch.autoscale.errors import SYNTAX_ERROR, FormulaError, located
from shoal.domain.batch.autoscale.names import Type

D, V, S, TS, TI, NEVER = Type.DOUBLE, Type.VEC, Type.STRING, Type.TIMESTAMP, Type.INTERVAL, Type.NEVER

ARITHMETIC: dict[tuple[str, Type, Type], Type] = {}
for _op in "+-*/":
    ARITHMETIC[(_op, D, D)] = D
    ARITHMETIC[(_op, V, D)] = V
    ARITHMETIC[(_op, V, V)] = V
ARITHMETIC.update({("*", D, TI): TI, ("*", TI, D): TI, ("/", TI, D): TI, ("+", TI, TI): TI, ("-", TI, TI): TI,
                   ("+", TI, TS): TS, ("+", TS, TI): TS, ("-", TS, TS): TI})
COMPARISONS = frozenset({"<", "<=", ">", ">=", "==", "!="})
COMPARABLE = frozenset({D, S, TS, TI})
LOGICAL = frozenset({"&&", "||"})


def check(text: str, statements: tuple[sx.Statement, ...]) -> None:
    _Checker(text).program(statements)


class _Checker:
    def __init__(self, text: str) -> None:
        self.text = text
        self.variables: dict[str, Type] = {}

    def fail(self, at: int, detail: str) -> FormulaError:
        return located(SYNTAX_ERROR, self.text, at, detail)

    def program(self, statements: tuple[sx.Statement, ...]) -> None:
        for statement in statements:
            value_type = self.expr(statement.value)
            if isinstance(statement, sx.Assign):
                self.assign(statement, value_type)
            elif value_type is Type.METRIC:
                raise self.metric_as_value(statement.value)

    def assign(self, statement: sx.Assign, value_type: Type) -> None:
        name, at = statement.name, statement.pos
        if nm.is_constant(name):
            raise self.fail(at, f"'{name}' is a constant and cannot be assigned")
        if name in nm.SAMPLED or name in nm.PLAIN:
            raise self.fail(at, f"'{name}' is a read-only service-defined variable")
        if value_type is Type.METRIC:
            raise self.metric_as_value(statement.value)
        if name in nm.TARGETS:
            self.expect(statement.value, value_type, (D,), f"the value of {name}")
        elif name == nm.DEALLOCATION:
            self.expect(statement.value, value_type, (S,), f"the value of {name}")
            literal = _literal_string(statement.value)
            if literal is not None and literal.lower() not in nm.DEALLOCATION_OPTIONS:
                raise self.fail(statement.value.pos, f"'{literal}' is not a node deallocation option (one of "
                                f"{', '.join(nm.DEALLOCATION_OPTIONS)})")
        else:
            self.variables[name] = value_type

    def expect(self, node: sx.Expr, actual: Type, allowed: tuple[Type, ...], what: str) -> None:
        if actual is Type.METRIC:
            raise self.metric_as_value(node)
        if actual is not NEVER and actual not in allowed:
            names = [str(t) for t in allowed]
            wanted = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
            raise self.fail(node.pos, f"{what} must be a {wanted}, not a {actual}")

    def metric_as_value(self, node: sx.Expr) -> FormulaError:
        name = node.name if isinstance(node, sx.Name) else "a sampled metric"
        return self.fail(node.pos, f"'{name}' is a sampled metric: read it with a sample method, such as "
                                   f"{name}.GetSample(TimeInterval_Minute * 5)")

    # --- expressions ----------------------------------------------------------------------------------------
    def value(self, node: sx.Expr) -> Type:
        """The type of an expression used as a value (a bare sampled metric is not one)."""
        t = self.expr(node)
        if t is Type.METRIC:
            raise self.metric_as_value(node)
        return t

    def expr(self, node: sx.Expr) -> Type:
        match node:
            case sx.Number():
                return D
            case sx.String():
                return S
            case sx.Name():
                return self.name(node)
            case sx.Unary():
                return self.unary(node)
            case sx.Chain():
                return self.chain(node)
            case sx.Ternary():
                self.expect(node.condition, self.value(node.condition), (D,), "the condition of '?:'")
                then, otherwise = self.value(node.then), self.value(node.otherwise)
                if then is NEVER or then == otherwise:
                    return otherwise
                if otherwise is NEVER:
                    return then
                raise self.fail(node.pos, f"both values of '?:' must have the same type, not {then} and "
                                          f"{otherwise}")
            case sx.Call():
                return self.call(node)
            case sx.Method():
                return self.method(node)
            case sx.Field():
                target = self.value(node.target)
                if target is NEVER:
                    return D
                if target is not TS:
                    raise self.fail(node.field_pos, f"only a timestamp has members; this is a {target}")
                if node.field not in nm.TIMESTAMP_FIELDS:
                    raise self.fail(node.field_pos, f"a timestamp has no member '{node.field}' (it has "
                                                    f"{', '.join(nm.TIMESTAMP_FIELDS)})")
                return D
        raise AssertionError(node)  # pragma: no cover

    def name(self, node: sx.Name) -> Type:
        name = node.name
        if name in nm.INTERVALS:
            return TI
        if name.lower() in nm.DEALLOCATION_OPTIONS:
            return S
        if name in nm.TARGETS or name in nm.PLAIN:
            return D
        if name == nm.DEALLOCATION:
            return S
        if name in nm.SAMPLED:
            return Type.METRIC
        if name in self.variables:
            return self.variables[name]
        raise self.fail(node.pos, f"'{name}' is not defined: assign it before using it")

    def unary(self, node: sx.Unary) -> Type:
        t = self.value(node.operand)
        if t is NEVER or t is D or (node.op == "-" and t is TI):
            return t
        raise self.fail(node.pos, f"'{node.op}' does not apply to a {t}")

    def chain(self, node: sx.Chain) -> Type:
        left = self.value(node.operands[0])
        for op, at, operand in zip(node.ops, node.op_positions, node.operands[1:], strict=True):
            right = self.value(operand)
            if left is NEVER or right is NEVER:
                left = NEVER
            elif op in COMPARISONS:
                if left is not right or left not in COMPARABLE:
                    raise self.fail(at, f"'{op}' compares two doubles, strings, timestamps or timeintervals, "
                                        f"not a {left} and a {right}")
                left = D
            elif op in LOGICAL:
                if left is not D or right is not D:
                    raise self.fail(at, f"'{op}' applies to doubles, not a {left} and a {right}")
            else:
                result = ARITHMETIC.get((op, left, right))
                if result is None:
                    raise self.fail(at, f"'{op}' does not apply to a {left} and a {right}")
                left = result
        return left

    def call(self, node: sx.Call) -> Type:
        name, args = node.function, node.args
        if name not in nm.FUNCTIONS:
            raise self.fail(node.pos, f"'{name}' is not a function")
        types = [self.value(a) for a in args]
        if name in nm.LIST_FUNCTIONS or name in nm.ELEMENTWISE_FUNCTIONS:
            for a, t in zip(args, types, strict=True):
                self.expect(a, t, (D, V), f"an argument of {name}()")
            if name in nm.LIST_FUNCTIONS:
                return D
            if not args:
                raise self.fail(node.pos, f"{name}() needs a double or a doubleVec")
            return D if len(args) == 1 and types[0] in (D, NEVER) else V
        if name in ("rand", "stop"):
            self.arity(node, 0, 0)
            return D if name == "rand" else NEVER
        if name == "time":
            self.arity(node, 0, 1)
            if args:
                self.expect(args[0], types[0], (S,), "the argument of time()")
            return TS
        self.arity(node, 2, 2)  # percentile(doubleVec v, double p), val(doubleVec v, double i)
        self.expect(args[0], types[0], (V,), f"the first argument of {name}()")
        self.expect(args[1], types[1], (D,), f"the second argument of {name}()")
        return D

    def arity(self, node: sx.Call | sx.Method, low: int, high: int) -> None:
        n = len(node.args)
        if not low <= n <= high:
            callee = node.function if isinstance(node, sx.Call) else node.method
            wanted = f"{low}" if low == high else f"{low} or {high}" if high == low + 1 else f"{low} to {high}"
            plural = "" if low == high == 1 else "s"
            raise self.fail(node.pos, f"{callee}() takes {wanted} argument{plural}, not {n}")

    def method(self, node: sx.Method) -> Type:
        receiver = node.receiver
        kind = self.expr(receiver)
        if kind is not Type.METRIC:
            what = f"'{receiver.name}'" if isinstance(receiver, sx.Name) else "this value"
            raise self.fail(node.method_pos, f"{what} has no method '{node.method}': sample methods apply to the "
                                             f"sampled service-defined variables (such as $PendingTasks)")
        if node.method not in nm.SAMPLE_METHODS:
            raise self.fail(node.method_pos, f"'{node.method}' is not a sample method (they are "
                                             f"{', '.join(nm.SAMPLE_METHODS)})")
        types = [self.value(a) for a in node.args]
        if node.method in ("GetSamplePeriod", "Count", "HistoryBeginTime"):
            self.arity(node, 0, 0)
            return {"GetSamplePeriod": TI, "Count": D, "HistoryBeginTime": TS}[node.method]
        when = (TS, TI)
        if node.method == "GetSamplePercent":
            self.arity(node, 1, 2)
            for a, t in zip(node.args, types, strict=True):
                self.expect(a, t, when, "a time argument of GetSamplePercent()")
            return D
        self.arity(node, 1, 3)  # GetSample(count) | (start[, percent]) | (start, end[, percent])
        first = types[0]
        if len(types) == 1:
            self.expect(node.args[0], first, (D, TS, TI), "the argument of GetSample()")
            return V
        self.expect(node.args[0], first, when, "the start of GetSample()")
        if len(types) == 2:
            self.expect(node.args[1], types[1], (D, TS, TI), "the second argument of GetSample()")
        else:
            self.expect(node.args[1], types[1], when, "the end of GetSample()")
            self.expect(node.args[2], types[2], (D,), "the sample percent of GetSample()")
        return V


def _literal_string(node: sx.Expr) -> str | None:
    if isinstance(node, sx.String):
        return node.value
    if isinstance(node, sx.Name) and node.name.lower() in nm.DEALLOCATION_OPTIONS:
        return node.name
    return None
