"""The ARM template language without a server: the expression parser (property tests), the functions, and
templates expanded into resources (copy loops, conditions, dependsOn, cycles, parameters, positions)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.domain.templates import engine, positions
from shoal.domain.templates import expressions as ex
from shoal.domain.templates import functions as fx

ENV = engine.Environment("sub", "tenant", {"id": "/subscriptions/sub/resourceGroups/g", "name": "g",
                                           "location": "westus"}, "dep")

# --- the parser -----------------------------------------------------------------------------------------------
names = st.sampled_from(["concat", "parameters", "variables", "if", "equals", "format", "x_1", "A"])
literals = st.one_of(st.integers(-10**12, 10**12).map(ex.Literal), st.text(max_size=12).map(ex.Literal))


def trees(depth: int = 3) -> st.SearchStrategy[ex.Expr]:
    return st.recursive(literals, lambda inner: st.one_of(
        st.builds(ex.Call, names, st.lists(inner, max_size=3).map(tuple)),
        st.builds(ex.Member, inner, st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)),
        st.builds(ex.Index, inner, inner)), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(trees())
def test_rendering_a_tree_parses_back_to_the_same_tree(tree: ex.Expr) -> None:
    assert ex.parse(ex.render(tree)) == tree


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("concat(),.[]' 0123456789-_ab\"\n")), max_size=40) | st.text(max_size=40))
def test_the_parser_fails_only_with_its_own_error_and_a_position_inside_the_text(text: str) -> None:
    try:
        tree = ex.parse(text)
    except ex.ExpressionError as exc:
        assert 0 <= exc.position <= len(text)
        assert exc.message
    else:
        assert ex.parse(ex.render(tree)) == tree


class _Scope:
    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params = params or {}

    def parameter(self, name: str) -> Any:
        if name not in self.params:
            raise fx.EvaluationError(f"no parameter {name}")
        return self.params[name]

    def variable(self, name: str) -> Any:
        raise fx.EvaluationError("no variables")

    def copy_index(self, loop: str | None) -> int:
        return 2

    def reference(self, target: str, api_version: str | None, full: bool) -> Any:
        return {"target": target}

    def resource_group(self) -> dict[str, Any]:
        return {"name": "g", "location": "westus", "id": "/subscriptions/sub/resourceGroups/g"}

    def subscription(self) -> dict[str, Any]:
        return {"subscriptionId": "sub", "id": "/subscriptions/sub"}

    def deployment(self) -> dict[str, Any]:
        return {"name": "dep"}


@settings(max_examples=300, deadline=None)
@given(trees())
def test_evaluating_any_tree_fails_only_with_the_evaluation_error(tree: ex.Expr) -> None:
    try:
        fx.evaluate(tree, _Scope({"a": 1}))
    except fx.EvaluationError as exc:
        assert exc.message


@pytest.mark.parametrize(("text", "value"), [
    ("[concat('vm', string(copyIndex(1)))]", "vm3"),
    ("[format('{0}-{1:D3}', 'a', 7)]", "a-007"),
    ("[if(equals(parameters('n'), 2), 'two', 'other')]", "two"),
    ("[if(true(), 'ok', parameters('missing'))]", "ok"),
    ("[toUpper(resourceGroup().location)]", "WESTUS"),
    ("[resourceId('Microsoft.Compute/virtualMachines', 'vm1')]",
     "/subscriptions/sub/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/vm1"),
    ("[length(union(createArray(1, 2), createArray(2, 3)))]", 3),
    ("[createObject('a', json('{\"b\": [1, 2]}')).a.b[1]]", 2),
    ("[empty('')]", True), ("[int('42')]", 42), ("[bool('true')]", True), ("[string(true())]", "True"),
    ("[reference('vm0').target]", "vm0"), ("[length(uniqueString('a', 'b'))]", 13),
    ("[equals(guid('x'), guid('x'))]", True), ("[toLower('AbC')]", "abc"), ("[[literal]", "[literal]"),
    ("[subscription().subscriptionId]", "sub"), ("[concat(createArray(1), createArray(2))]", [1, 2]),
])
def test_functions(text: str, value: Any) -> None:
    assert fx.evaluate_string(text, _Scope({"n": 2})) == value


# --- templates ------------------------------------------------------------------------------------------------
def vm_template(**extra: Any) -> dict[str, Any]:
    return {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {"count": {"type": "int", "defaultValue": 3}, "prefix": {"type": "string"}},
        "variables": {"location": "[resourceGroup().location]"},
        "resources": [
            {"type": "Microsoft.Compute/disks", "apiVersion": "2023-04-02", "name": "data",
             "location": "[variables('location')]"},
            {"type": "Microsoft.Compute/virtualMachines", "apiVersion": "2024-07-01",
             "name": "[concat(parameters('prefix'), copyIndex())]", "dependsOn": ["data"],
             "copy": {"name": "vms", "count": "[parameters('count')]"}, "location": "[variables('location')]"},
            {"type": "Microsoft.Compute/images", "apiVersion": "2024-07-01", "name": "img", "dependsOn": ["vms"],
             "condition": "[greater(parameters('count'), 0)]"},
        ],
        **extra,
    }


def test_a_copy_loop_expands_and_dependents_follow_their_dependencies() -> None:
    plan = engine.Template(vm_template(), {"prefix": {"value": "vm"}}, ENV).plan()
    names = [i.name for i in plan]
    assert names[0] == "data" and names[-1] == "img"
    assert sorted(names[1:4]) == ["vm0", "vm1", "vm2"]
    assert len(plan[-1].depends_on) == 3
    assert plan[1].depends_on == [plan[0].id]


def test_a_false_condition_drops_the_resource_and_dependencies_on_it() -> None:
    plan = engine.Template(vm_template(), {"prefix": {"value": "vm"}, "count": {"value": 0}}, ENV).plan()
    assert [i.name for i in plan] == ["data"]


def test_a_circular_dependency_is_refused() -> None:
    template = vm_template()
    template["resources"][0]["dependsOn"] = ["img"]
    with pytest.raises(engine.TemplateError, match="Circular dependency"):
        engine.Template(template, {"prefix": {"value": "vm"}}, ENV).plan()


@pytest.mark.parametrize(("params", "match"), [
    ({}, "The value for the template parameter 'prefix' is not provided"),
    ({"prefix": {"value": "vm"}, "other": {"value": 1}}, "'other' in the parameters file are not valid"),
    ({"prefix": {"value": "vm"}, "count": {"value": "three"}}, "Expected a value of type 'Int'"),
])
def test_parameter_errors(params: dict[str, Any], match: str) -> None:
    with pytest.raises(engine.TemplateError, match=match):
        engine.Template(vm_template(), params, ENV)


def test_an_unknown_function_and_a_syntax_error_name_their_template_value() -> None:
    template = vm_template()
    template["resources"][0]["name"] = "[nosuchfunction('x')]"
    with pytest.raises(engine.TemplateError, match="'nosuchfunction' is not found") as caught:
        engine.Template(template, {"prefix": {"value": "vm"}}, ENV)
    assert caught.value.path == ("resources", 0, "name")
    template["resources"][0]["name"] = "[concat('a', ]"
    with pytest.raises(engine.TemplateError, match="at position '12'"):
        engine.Template(template, {"prefix": {"value": "vm"}}, ENV)


def test_positions_give_line_and_column_of_each_value() -> None:
    text = json.dumps({"properties": {"template": vm_template()}}, indent=2)
    found = positions.locate(text)
    line, column = found[("properties", "template", "resources", 1, "name")]
    assert text.splitlines()[line - 1][column - 1:].startswith('"[concat(')


def test_outputs_evaluate_with_reference() -> None:
    template = vm_template(outputs={"first": {"type": "string", "value": "[reference('vm0').size]"},
                                    "names": {"type": "array", "copy": {"count": 2, "input": "[copyIndex()]"}}})
    t = engine.Template(template, {"prefix": {"value": "vm"}}, ENV)
    outputs = t.outputs(lambda target, version, full: {"size": f"size-of-{target}"})
    assert outputs == {"first": {"type": "String", "value": "size-of-vm0"}, "names": {"type": "Array", "value": [0, 1]}}


def test_az_bodies_with_comments_and_an_unquoted_template_key_read_as_json_on_the_same_lines() -> None:
    from shoal.domain.templates import jsonc

    text = '{"properties": {"mode": "Incremental"}, template:{\n  // a comment\n  "resources": [1, 2,], /* x */\n' \
           '  "b": "not // a comment"\n}}'
    converted = jsonc.to_json(text)
    assert json.loads(converted) == {"properties": {"mode": "Incremental"},
                                     "template": {"resources": [1, 2], "b": "not // a comment"}}
    assert positions.locate(converted)[("template", "resources")][0] == 3
