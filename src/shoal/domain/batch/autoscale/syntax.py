"""The syntax tree of a formula. Every node keeps the 0-based offset where it starts, for error messages.

A run of operators of one precedence level (``a + b - c``, ``x && y && z``) is one :class:`Chain`, evaluated
left to right in a loop: long formulas do not make deep trees.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Number:
    pos: int
    value: float


@dataclass(frozen=True, slots=True)
class String:
    pos: int
    value: str


@dataclass(frozen=True, slots=True)
class Name:
    """A variable (``$TargetDedicatedNodes``, ``$myVar``, ``myVar``) or a constant (``TimeInterval_Hour``)."""

    pos: int
    name: str


@dataclass(frozen=True, slots=True)
class Unary:
    pos: int
    op: str  # "-" or "!"
    operand: Expr


@dataclass(frozen=True, slots=True)
class Chain:
    """``operands[0] ops[0] operands[1] ops[1] ...``, left-associative, all operators of one level."""

    pos: int
    ops: tuple[str, ...]
    op_positions: tuple[int, ...]
    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Ternary:
    pos: int
    condition: Expr
    then: Expr
    otherwise: Expr


@dataclass(frozen=True, slots=True)
class Call:
    pos: int
    function: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Method:
    """``$Metric.GetSample(...)`` and the other sample methods."""

    pos: int
    receiver: Expr
    method: str
    method_pos: int
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Field:
    """``timestamp.hour`` and the other members of a timestamp."""

    pos: int
    target: Expr
    field: str
    field_pos: int


Expr = Number | String | Name | Unary | Chain | Ternary | Call | Method | Field


@dataclass(frozen=True, slots=True)
class Assign:
    pos: int
    name: str
    value: Expr


@dataclass(frozen=True, slots=True)
class Evaluate:
    """A statement that is an expression alone, such as ``stop();``."""

    pos: int
    value: Expr


Statement = Assign | Evaluate
