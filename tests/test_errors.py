"""The error types of core/errors.py: one class per Azure error code, and no ad-hoc codes in the source."""

from __future__ import annotations

import ast
from pathlib import Path

from shoal.core import errors

SRC = Path(errors.__file__).resolve().parents[1]

# The only places an error's code is data rather than a class: (file below src/shoal, enclosing function).
GENERIC_SITES = {
    ("api/arm/operations.py", "result_response"),  # the code and status stored with a failed operation
    ("schemas/arm_bodies.py", "refusal"),  # the missing-property code a body model declares (missing_code)
    ("domain/templates/deployments.py", "advance"),  # a deployed resource's failure, as its operation recorded it
    ("domain/templates/deployments.py", "error_of"),  # a deployment's stored error, rebuilt from its record
}


def _error_classes() -> list[type[errors.AzureError]]:
    found: list[type[errors.AzureError]] = []
    todo = [errors.AzureError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


def test_every_error_class_has_its_own_code_and_a_client_or_server_status() -> None:
    owners: dict[str, type[errors.AzureError]] = {}
    for cls in _error_classes():
        assert 400 <= cls.status <= 599, cls
        assert cls.code, cls
        owner = owners.setdefault(cls.code, cls)
        # A plane that answers the same code with another status subclasses the code's class.
        assert owner is cls or issubclass(cls, owner), f"{cls.__name__} repeats the code of {owner.__name__}"
        if owner is not cls:
            assert cls.status != owner.status, f"{cls.__name__} adds nothing to {owner.__name__}"


def test_error_classes_are_named_after_their_code() -> None:
    for cls in _error_classes():
        assert cls.__name__.endswith(cls.code), cls


def test_batch_authentication_failures_are_403_where_arm_ones_are_401() -> None:
    assert (errors.AuthenticationFailed.status, errors.BatchAuthenticationFailed.status) == (401, 403)
    assert errors.BatchAuthenticationFailed("x").code == "AuthenticationFailed"


def _functions(tree: ast.AST) -> dict[ast.AST, str]:
    """Each node of the tree mapped to the name of the function that encloses it ('' at module level)."""
    owner: dict[ast.AST, str] = {}

    def walk(node: ast.AST, name: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else name
            owner[child] = inner
            walk(child, inner)

    walk(tree, "")
    return owner


def test_no_error_is_raised_with_an_ad_hoc_code() -> None:
    names = {"AzureError"} | {cls.__name__ for cls in _error_classes()}
    offending, generic = [], set()
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        owner = _functions(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name not in names or not any(k.arg == "code" for k in node.keywords):
                continue
            site = (rel, owner.get(node, ""))
            if site in GENERIC_SITES:
                generic.add(site)
            else:
                offending.append(f"{rel}:{node.lineno}")
    assert not offending, f"raise the error's class instead of AzureError(code=...): {offending}"
    assert generic == GENERIC_SITES, f"generic sites that no longer exist: {GENERIC_SITES - generic}"
