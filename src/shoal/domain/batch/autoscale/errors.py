"""The one exception of the formula language, with Azure's error codes and 1-based line/column values."""

from __future__ import annotations

SYNTAX_ERROR = "InvalidAutoScaleFormula"  # the formula does not parse or is ill-typed (found before any evaluation)
EVALUATION_ERROR = "AutoScalingFormulaEvaluationError"  # the formula failed while it ran


class FormulaError(Exception):
    """A formula that does not parse, is ill-typed, or fails while it runs.

    ``position`` is a 0-based offset into the formula text (``len(text)`` for "at the end"), or None when the
    error is about the formula as a whole; ``values`` are Azure's error values (``Line``/``Column``, 1-based).
    """

    def __init__(self, code: str, message: str, *, position: int | None = None,
                 values: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.position = position
        self.values: list[dict[str, str]] = values or []

    def __str__(self) -> str:
        return self.message


def line_column(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of a 0-based offset (lines end at ``\\n``)."""
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return line, column


def located(code: str, text: str, position: int, detail: str, *, prefix: str = "") -> FormulaError:
    """An error at ``position`` whose message reads ``[prefix: ]line L, column C: detail``."""
    line, column = line_column(text, position)
    head = f"{prefix}: " if prefix else ""
    return FormulaError(code, f"{head}line {line}, column {column}: {detail}", position=position,
                        values=[{"name": "Line", "value": str(line)}, {"name": "Column", "value": str(column)},
                                {"name": "Message", "value": detail}])
