"""The language's entry points: :func:`parse` a formula, :func:`evaluate` it against a pool's metrics."""

from __future__ import annotations

import random
from dataclasses import dataclass

from shoal.domain.batch.autoscale import names as nm
from shoal.domain.batch.autoscale import syntax as sx
from shoal.domain.batch.autoscale.checker import check
from shoal.domain.batch.autoscale.errors import EVALUATION_ERROR, FormulaError
from shoal.domain.batch.autoscale.evaluator import Machine
from shoal.domain.batch.autoscale.parser import parse_statements
from shoal.domain.batch.autoscale.sampling import Metrics
from shoal.domain.batch.autoscale.values import format_double, format_value

MAX_TARGET = 2**31 - 1  # targetDedicatedNodes and targetLowPriorityNodes are 32-bit integers


@dataclass(frozen=True)
class Program:
    """A parsed and type-checked formula."""

    text: str
    statements: tuple[sx.Statement, ...]


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one evaluation.

    ``target_dedicated``/``target_low_priority`` are the targets to apply: the formula's values truncated to
    whole nodes (0 for a negative value), or the pool's current targets where the formula sets none.
    ``node_deallocation_option`` is None when the formula does not set it (Azure then uses ``requeue``).
    ``results`` is Azure's ``autoScaleRun.results``: the service-defined variables first, then the formula's own
    variables by name, each as ``$Name=value`` joined by ``;``. ``stopped`` says that ``stop()`` ended it early.
    """

    target_dedicated: int
    target_low_priority: int
    node_deallocation_option: str | None
    results: str
    stopped: bool = False


def parse(text: str) -> Program:
    """Parse and type-check a formula; raises :class:`FormulaError` with the line and column of the problem."""
    statements = parse_statements(text)
    check(text, statements)
    return Program(text, statements)


def evaluate(program: Program | str, metrics: Metrics, *, current_dedicated: int, current_low_priority: int,
             rng: random.Random | None = None) -> Evaluation:
    """Run a formula. ``$TargetDedicatedNodes`` and ``$TargetLowPriorityNodes`` start at the pool's current
    targets (``current_dedicated``, ``current_low_priority``); ``rng`` feeds ``rand()``."""
    if isinstance(program, str):
        program = parse(program)
    machine = Machine(program.text, metrics, current_dedicated=current_dedicated,
                      current_low_priority=current_low_priority, rng=rng or random.Random())
    return _outcome(machine, machine.run(program.statements))


def _outcome(machine: Machine, stopped: bool) -> Evaluation:
    dedicated = _effective(machine, nm.TARGET_DEDICATED, "$TargetDedicated")
    low_priority = _effective(machine, nm.TARGET_LOW_PRIORITY, "$TargetLowPriority")
    parts = [f"{nm.TARGET_DEDICATED}={format_double(dedicated)}",
             f"{nm.TARGET_LOW_PRIORITY}={format_double(low_priority)}",
             f"{nm.DEALLOCATION}={machine.deallocation or nm.DEFAULT_DEALLOCATION}"]
    parts += [f"{alias}={format_double(machine.targets[alias])}" for alias in nm.ALIASES
              if alias in machine.assigned_targets]
    parts += [f"{name}={format_value(machine.variables[name])}"
              for name in sorted(machine.variables, key=lambda n: (n.lstrip("$").casefold(), n))]
    return Evaluation(_nodes(nm.TARGET_DEDICATED, dedicated), _nodes(nm.TARGET_LOW_PRIORITY, low_priority),
                      machine.deallocation, ";".join(parts), stopped)


def explain(text: str, metrics: Metrics, *, current_dedicated: int, current_low_priority: int,
            rng: random.Random | None = None) -> dict[str, object]:
    """Why a formula does what it does: every variable's value after the run (the service-defined ones it read
    or set, and its own), every sampled-metric call with what it got, and the results or the error. Azure shows
    only the results string; this is what an autoscale editor shows beside it."""
    try:
        program = parse(text)
    except FormulaError as exc:
        return {"error": {"code": exc.code, "message": exc.message}, "variables": {}, "reads": [], "results": None}
    machine = Machine(program.text, metrics, current_dedicated=current_dedicated,
                      current_low_priority=current_low_priority, rng=rng or random.Random())
    error: dict[str, str] | None = None
    results: str | None = None
    try:
        results = _outcome(machine, machine.run(program.statements)).results
    except FormulaError as exc:  # the state up to the failing statement is what the editor shows
        error = {"code": exc.code, "message": exc.message}
    variables = {name: format_double(float(value)) for name, value in machine.plain.items()}
    variables.update({name: format_double(machine.targets[name]) for name in nm.TARGETS})
    variables[nm.DEALLOCATION] = machine.deallocation or nm.DEFAULT_DEALLOCATION
    variables.update({name: format_value(value) for name, value in machine.variables.items()})
    series = {}
    for name in sorted({str(r["metric"]) for r in machine.reads}):
        samples = metrics.series.get(name[1:]) or []
        latest = max(samples, key=lambda x: x.timestamp) if samples else None
        series[name] = {"samples": len(samples), "latest": format_double(float(latest.value)) if latest else None}
    return {"results": results, "error": error, "variables": variables, "reads": machine.reads, "series": series}


def _effective(machine: Machine, name: str, alias: str) -> float:
    """The fully named variable if the formula set it, else its alias if set, else the current target."""
    if name not in machine.assigned_targets and alias in machine.assigned_targets:
        return machine.targets[alias]
    return machine.targets[name]


def _nodes(name: str, value: float) -> int:
    nodes = max(0, int(value))  # toward zero: 2.9 nodes are 2
    if nodes > MAX_TARGET:
        raise FormulaError(EVALUATION_ERROR, f"{name} is {format_double(value)}, more nodes than a pool can "
                                             f"have ({MAX_TARGET})")
    return nodes
