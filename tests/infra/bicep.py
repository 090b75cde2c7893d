"""The Bicep templates as the infra tests read them: parsed by pycep-parser, wrappers taken off.

pycep renders a template as JSON-like dicts. Two quirks matter here: an identifier and a string
literal both come out as a plain str (``'managedidentity'`` and ``identityClientId`` look alike),
and a conditional or looped resource nests its body one level down. The helpers below hide the
second; the tests handle the first by checking names against the declared parameters.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"

Template = dict[str, Any]


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@functools.cache
def parse(relative: str) -> Template:
    """Parse infra/<relative> once per test session."""
    return cast(Template, BicepParser().parse(file_path=INFRA / relative))


def text(relative: str) -> str:
    return (INFRA / relative).read_text(encoding="utf-8")


def _unwrap(config: dict[str, Any]) -> dict[str, Any]:
    """Body of a resource or module, whether plain, conditional (`if`) or looped (`for`)."""
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def resource(template: Template, name: str) -> dict[str, Any]:
    """Body (name, properties, ...) of the resource with symbolic name `name`."""
    return _unwrap(template["resources"][name]["config"])


def resource_condition(template: Template, name: str) -> Any:
    return template["resources"][name]["config"].get("condition")


def resources_of_type(template: Template, resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        name: _unwrap(declaration["config"])
        for name, declaration in template["resources"].items()
        if declaration["type"].lower() == resource_type.lower()
    }


def module(template: Template, name: str) -> dict[str, Any]:
    return _unwrap(template["modules"][name]["config"])


def module_condition(template: Template, name: str) -> Any:
    return template["modules"][name]["config"].get("condition")


def module_path(template: Template, name: str) -> str:
    path: str = template["modules"][name]["detail"]["path"]
    return path


def variable(template: Template, name: str) -> Any:
    return template["variables"][name]["value"]


def param_default(template: Template, name: str) -> Any:
    return template["parameters"][name]["default"]


def required_params(template: Template) -> set[str]:
    return {name for name, param in template["parameters"].items() if param["default"] is None}


def decorator(template: Template, param: str, kind: str) -> Any:
    for item in template["parameters"][param]["decorators"]:
        if item["type"] == kind:
            return item["argument"]
    raise KeyError(f"{param} has no @{kind} decorator")


def unquote(key: str) -> str:
    """pycep keeps the quotes of a quoted object key (`'azd-service-name': ...`)."""
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def accessor_chain(expression: Any) -> list[Any] | None:
    """`a.b.c` -> ['a', 'b', 'c']; None when the expression is not a property access."""
    if not isinstance(expression, dict) or "operator" not in expression:
        return None
    operator = expression["operator"]
    if operator["type"] != "property_accessor":
        return None
    head = operator["operands"]["operand_1"]
    tail = operator["operands"]["operand_2"]
    rest = accessor_chain(tail)
    return [head, *(rest if rest is not None else [tail])]


def function_call(expression: Any, function: str) -> dict[str, Any] | None:
    """Parameters of a call to `function`, or None when `expression` is something else."""
    if isinstance(expression, dict) and expression.get("function", {}).get("type") == function:
        parameters: dict[str, Any] = expression["function"]["parameters"]
        return parameters
    return None


def walk(node: Any) -> Iterator[Any]:
    """Every value in a parsed expression tree, depth first."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def module_output_references(template: Template) -> set[tuple[str, str]]:
    """Every `<module>.outputs.<name>` the template reads."""
    found = set()
    modules = set(template.get("modules", {}))
    for node in walk(template):
        chain = accessor_chain(node)
        if chain and len(chain) >= 3 and chain[0] in modules and chain[1] == "outputs":
            found.add((chain[0], chain[2]))
    return found


def interpolated_names(value: str) -> set[str]:
    """Identifiers used in `${...}` interpolations of a string."""
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}", value))
