"""Check every resource body in a folder of Bicep files against Azure's own resource models.

Run by tests/infra/test_resource_models.py with the interpreter of `.venv-azmodels` (Makefile), which
holds pycep-parser and the Azure management SDKs pinned in tests/infra/azmodels-requirements.txt:

    .venv-azmodels/bin/python tests/infra/resource_models.py [--json] infra

The management SDKs are generated from the same REST API specifications that Azure Resource Manager
validates requests against. For each resource of a type listed in MODELS, this walks the body
(`properties` and the other top-level members, nested objects, arrays, `for` loops, both branches
of `cond ? a : b`, and variables and parameters it can resolve in the same file) and reports:

- a property name the model does not have (a misspelling, or a property of another API version);
- a literal value of an enumerated property that is not one of the SDK enum's values (compared
  case-insensitively, as ARM does), including a parameter's default and its `@allowed` values;
- a literal of the wrong kind (a string where the model wants a boolean or a number);
- a value written to a property the model marks read-only.

The model module is the SDK's versioned one for the resource's apiVersion (`azure.mgmt.web.v2024_04_01`)
when the SDK ships it, else the SDK's default (newest) models; the report names the module used.
Exit status 1 when anything is reported. The script imports nothing from the project.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import importlib
import inspect
import json
import pkgutil
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycep import BicepParser

# Resource type -> (SDK package, model class of the PUT body). A tuple of (name, class) pairs picks
# the model by the resource's literal name (sites/config is one type with many documents).
MODELS: dict[str, tuple[str, str | tuple[tuple[str, str], ...]]] = {
    "microsoft.resources/resourcegroups": ("azure.mgmt.resource.resources", "ResourceGroup"),
    "microsoft.managedidentity/userassignedidentities": ("azure.mgmt.msi", "Identity"),
    "microsoft.storage/storageaccounts": ("azure.mgmt.storage", "StorageAccountCreateParameters"),
    "microsoft.storage/storageaccounts/blobservices": ("azure.mgmt.storage", "BlobServiceProperties"),
    "microsoft.storage/storageaccounts/blobservices/containers": ("azure.mgmt.storage", "BlobContainer"),
    "microsoft.storage/storageaccounts/queueservices": ("azure.mgmt.storage", "QueueServiceProperties"),
    "microsoft.storage/storageaccounts/queueservices/queues": ("azure.mgmt.storage", "StorageQueue"),
    "microsoft.storage/storageaccounts/tableservices": ("azure.mgmt.storage", "TableServiceProperties"),
    "microsoft.storage/storageaccounts/tableservices/tables": ("azure.mgmt.storage", "Table"),
    "microsoft.operationalinsights/workspaces": ("azure.mgmt.loganalytics", "Workspace"),
    "microsoft.insights/components": ("azure.mgmt.applicationinsights", "ApplicationInsightsComponent"),
    "microsoft.insights/actiongroups": ("azure.mgmt.monitor", "ActionGroupResource"),
    "microsoft.eventgrid/topics": ("azure.mgmt.eventgrid", "Topic"),
    "microsoft.eventgrid/topics/eventsubscriptions": ("azure.mgmt.eventgrid", "EventSubscription"),
    "microsoft.insights/scheduledqueryrules": ("azure.mgmt.monitor", "ScheduledQueryRuleResource"),
    "microsoft.authorization/roleassignments": ("azure.mgmt.authorization", "RoleAssignmentCreateParameters"),
    "microsoft.web/serverfarms": ("azure.mgmt.web", "AppServicePlan"),
    "microsoft.web/sites": ("azure.mgmt.web", "Site"),
    "microsoft.web/sites/basicpublishingcredentialspolicies": (
        "azure.mgmt.web",
        "CsmPublishingCredentialsPoliciesEntity",
    ),
    "microsoft.web/sites/config": (
        "azure.mgmt.web",
        (
            ("authsettingsV2", "SiteAuthSettingsV2"),
            ("authsettings", "SiteAuthSettings"),
            ("web", "SiteConfigResource"),
            ("appsettings", "StringDictionary"),
            ("logs", "SiteLogsConfig"),
        ),
    ),
}

# Members of a resource declaration that are Bicep's or ARM's envelope, not the provider's body.
ENVELOPE = frozenset({"name", "parent", "scope", "dependsOn"})
PRIMITIVES = frozenset(
    {
        "str",
        "bool",
        "int",
        "long",
        "float",
        "object",
        "duration",
        "iso-8601",
        "rfc-1123",
        "date",
        "unix-time",
        "bytearray",
        "base64",
        "decimal",
        "time",
    }
)
_DOT = re.compile(r"(?<!\\)\.")


@dataclass
class Finding:
    file: str
    resource: str
    resource_type: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.resource} ({self.resource_type}) {self.path}: {self.message}"


@dataclass
class Checked:
    file: str
    resource: str
    resource_type: str
    api_version: str
    model: str


@dataclass
class Report:
    checked: list[Checked] = field(default_factory=list)
    unchecked: list[dict[str, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ models


def models_module(package: str, api_version: str) -> tuple[Any, str]:
    """The SDK's models for `api_version`: its versioned module when it ships one, else the newest
    stable versioned module, else (single-API SDKs) its only `models`."""
    wanted = f"v{api_version.replace('-', '_')}"
    versions = sorted(
        info.name
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__)
        if re.fullmatch(r"v\d{4}_\d{2}_\d{2}", info.name) or info.name == wanted
    )
    chosen = wanted if wanted in versions else (versions[-1] if versions else None)
    name = f"{package}.{chosen}.models" if chosen else f"{package}.models"
    return importlib.import_module(name), name


@dataclass
class Attribute:
    name: str  # the SDK's Python name, as _validation keys it
    type: str
    owner: type


def attribute_tree(model: type) -> dict[str, Any]:
    """The model's REST shape: flattened keys ('properties.siteConfig') become nested dicts."""
    tree: dict[str, Any] = {}
    for name, spec in model._attribute_map.items():  # type: ignore[attr-defined]
        parts = [part.replace("\\.", ".") for part in _DOT.split(spec["key"])]
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = Attribute(name, spec["type"], model)
    return tree


def enum_of(attribute: Attribute, module: Any) -> type[enum.Enum] | None:
    """The SDK enum of an attribute: _attribute_map says 'str', the constructor's annotation knows."""
    try:
        parameter = inspect.signature(attribute.owner.__init__).parameters.get(attribute.name)
    except (TypeError, ValueError):
        parameter = None
    names = re.findall(r"_models\.(\w+)", str(parameter.annotation)) if parameter is not None else []
    if not names:
        doc = attribute.owner.__doc__ or ""
        match = re.search(rf":vartype {re.escape(attribute.name)}: ([^\n]+)", doc)
        names = re.findall(r"models\.(\w+)", match[1]) if match else []
    for name in names:
        candidate = getattr(module, name, None)
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


def read_only(attribute: Attribute) -> bool:
    validation = getattr(attribute.owner, "_validation", {}) or {}
    return bool(validation.get(attribute.name, {}).get("readonly"))


# ---------------------------------------------------------------------------------------- template


@dataclass
class Scope:
    """What a plain string can refer to in one file (pycep renders `foo` and `'foo'` alike)."""

    template: dict[str, Any]
    symbols: set[str]

    def variable(self, name: str) -> Any:
        return self.template.get("variables", {}).get(name, {}).get("value")

    def parameter(self, name: str) -> dict[str, Any] | None:
        parameter: dict[str, Any] | None = self.template.get("parameters", {}).get(name)
        return parameter


def declared_symbols(template: dict[str, Any]) -> set[str]:
    symbols: set[str] = set()
    for section in ("parameters", "variables", "resources", "modules", "outputs"):
        symbols |= set(template.get(section, {}))

    def loops(node: Any) -> None:
        if isinstance(node, dict):
            detail = node.get("loop_type", {}).get("detail") if isinstance(node.get("loop_type"), dict) else None
            if isinstance(detail, dict):
                symbols.update(str(value) for key, value in detail.items() if key.endswith("_name"))
            for value in node.values():
                loops(value)
        elif isinstance(node, list):
            for value in node:
                loops(value)

    loops(template)
    return symbols


def is_expression(value: Any) -> bool:
    """pycep's rendering of a call or operator; an object literal may have a member named `operator`."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    inner = value.get("function", value.get("operator"))
    return isinstance(inner, dict) and "type" in inner


def conditional_branches(value: Any) -> list[Any] | None:
    if isinstance(value, dict) and isinstance(value.get("operator"), dict):
        operator = value["operator"]
        if operator.get("type") == "conditional":
            return [operator["operands"]["true_value"], operator["operands"]["false_value"]]
    return None


def unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def unwrap(config: dict[str, Any]) -> dict[str, Any]:
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


# ----------------------------------------------------------------------------------------- checker


class ResourceChecker:
    def __init__(self, scope: Scope, module: Any, report: Report, where: tuple[str, str, str]) -> None:
        self.scope = scope
        self.module = module
        self.report = report
        self.where = where
        self._resolving: set[str] = set()

    def problem(self, path: str, message: str) -> None:
        file, resource, resource_type = self.where
        self.report.findings.append(Finding(file, resource, resource_type, path, message))

    def check_object(self, value: dict[str, Any], model: type, path: str, *, top: bool = False) -> None:
        model = self._subtype(model, value)
        self.check_tree(value, attribute_tree(model), path, top=top, model=model)

    def check_tree(self, value: dict[str, Any], tree: dict[str, Any], path: str, *, top: bool, model: type) -> None:
        open_ended = any(isinstance(node, Attribute) and node.name == "additional_properties" for node in tree.values())
        for raw_key, member in value.items():
            key = unquote(raw_key)
            if top and key in ENVELOPE:
                continue
            where = f"{path}.{key}" if path else key
            node = tree.get(key)
            if node is None:
                if open_ended and "" in tree:
                    continue
                close = difflib.get_close_matches(key, [k for k in tree if k], n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.problem(where, f"unknown property '{key}' for {model.__name__}{hint}")
                continue
            if isinstance(node, dict):
                for branch in self.literals(member):
                    if isinstance(branch, dict):
                        self.check_tree(branch, node, where, top=False, model=model)
                continue
            if read_only(node) and not (top and key == "name"):
                self.problem(where, f"'{key}' is read-only in {node.owner.__name__}; Azure ignores or rejects it")
            self.check_value(member, node, where)

    def literals(self, value: Any) -> list[Any]:
        """The literal values an expression can take that this file shows; [] when unknowable."""
        branches = conditional_branches(value)
        if branches is not None:
            return [literal for branch in branches for literal in self.literals(branch)]
        if isinstance(value, str) and value in self.scope.symbols:
            if value in self._resolving:
                return []
            resolved = self.scope.variable(value)
            if resolved is not None:
                self._resolving.add(value)
                try:
                    return self.literals(resolved)
                finally:
                    self._resolving.discard(value)
            parameter = self.scope.parameter(value)
            if parameter is not None:
                candidates = [parameter.get("default")]
                for decorator in parameter.get("decorators", []):
                    if decorator.get("type") == "allowed":
                        candidates.extend(decorator.get("argument") or [])
                return [c for c in candidates if c is not None and not is_expression(c) and not self.reference(c)]
            return []
        if is_expression(value):
            return []
        return [value]

    def reference(self, value: Any) -> bool:
        return isinstance(value, str) and (value in self.scope.symbols or "${" in value)

    def check_value(self, value: Any, attribute: Attribute, path: str) -> None:
        kind = attribute.type
        for literal in self.literals(value):
            if kind.startswith("[") and kind.endswith("]"):
                item = Attribute(attribute.name, kind[1:-1], attribute.owner)
                if isinstance(literal, dict) and "loop_type" in literal:
                    self.check_value(literal["config"], item, f"{path}[for]")
                elif isinstance(literal, list):
                    for index, element in enumerate(literal):
                        self.check_value(element, item, f"{path}[{index}]")
                else:
                    self.problem(path, f"expected an array for {attribute.name}, got {type(literal).__name__}")
            elif kind.startswith("{") and kind.endswith("}"):
                item = Attribute(attribute.name, kind[1:-1], attribute.owner)
                if isinstance(literal, dict):
                    for key, element in literal.items():
                        self.check_value(element, item, f"{path}.{unquote(key)}")
                else:
                    self.problem(path, f"expected an object for {attribute.name}, got {type(literal).__name__}")
            elif kind in PRIMITIVES:
                self.check_primitive(literal, attribute, path)
            else:
                model = getattr(self.module, kind, None)
                if model is None or not hasattr(model, "_attribute_map"):
                    continue
                if isinstance(literal, dict):
                    self.check_object(literal, model, path)
                else:
                    self.problem(path, f"expected an object ({kind}), got {type(literal).__name__}")

    def check_primitive(self, literal: Any, attribute: Attribute, path: str) -> None:
        kind = attribute.type
        if isinstance(literal, str) and self.reference(literal):
            return
        if kind == "bool" and not isinstance(literal, bool):
            self.problem(path, f"expected a boolean, got {literal!r}")
        elif kind in ("int", "long", "float", "decimal") and (isinstance(literal, bool) or isinstance(literal, str)):
            self.problem(path, f"expected a number, got {literal!r}")
        elif kind == "str" and isinstance(literal, str):
            values = enum_of(attribute, self.module)
            if values is None:
                return
            allowed = {str(member.value).lower(): str(member.value) for member in values}
            if literal.lower() not in allowed:
                self.problem(path, f"'{literal}' is not a value of {values.__name__}: {sorted(allowed.values())}")

    def _subtype(self, model: type, value: dict[str, Any]) -> type:
        """Polymorphic models: pick the subclass the literal discriminator names."""
        subtypes = getattr(model, "_subtype_map", None) or {}
        for attribute, mapping in subtypes.items():
            key = model._attribute_map[attribute]["key"]  # type: ignore[attr-defined]
            discriminator = value.get(key)
            if isinstance(discriminator, str) and discriminator in mapping:
                sub = getattr(self.module, mapping[discriminator], None)
                if isinstance(sub, type):
                    return sub
        return model


def model_for(resource_type: str, body: dict[str, Any]) -> tuple[str, str] | None:
    entry = MODELS.get(resource_type.lower())
    if entry is None:
        return None
    package, model = entry
    if isinstance(model, str):
        return package, model
    name = body.get("name")
    for document, class_name in model:
        if name == document:
            return package, class_name
    return None


def check_file(path: Path, root: Path, report: Report) -> None:
    template = BicepParser().parse(file_path=path)
    scope = Scope(template, declared_symbols(template))
    relative = path.relative_to(root).as_posix()
    for symbol, declaration in template.get("resources", {}).items():
        resource_type = declaration["type"]
        if declaration.get("existing"):
            continue
        body = unwrap(declaration["config"])
        chosen = model_for(resource_type, body)
        if chosen is None:
            report.unchecked.append({"file": relative, "resource": symbol, "type": resource_type})
            continue
        package, class_name = chosen
        api_version = declaration.get("api_version") or ""
        module, module_name = models_module(package, api_version)
        model = getattr(module, class_name)
        report.checked.append(Checked(relative, symbol, resource_type, api_version, f"{module_name}.{class_name}"))
        ResourceChecker(scope, module, report, (relative, symbol, resource_type)).check_object(
            body, model, "", top=True
        )


def check(root: Path) -> Report:
    report = Report()
    for path in sorted(root.rglob("*.bicep")):
        check_file(path, root, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder of .bicep files (searched recursively)")
    parser.add_argument("--json", action="store_true", help="one JSON document: checked, unchecked, findings")
    args = parser.parse_args(argv)
    report = check(args.root.resolve())
    if args.json:
        print(
            json.dumps(
                {
                    "checked": [vars(item) for item in report.checked],
                    "unchecked": report.unchecked,
                    "findings": [vars(item) for item in report.findings],
                },
                indent=1,
            )
        )
    else:
        for item in report.checked:
            print(f"checked {item.file}: {item.resource} {item.resource_type}@{item.api_version} against {item.model}")
        for item in report.unchecked:
            print(f"no model {item['file']}: {item['resource']} {item['type']}")
        for finding in report.findings:
            print(f"ERROR {finding}")
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
