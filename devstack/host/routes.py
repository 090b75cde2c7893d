"""HTTP route templates (under host.json ``routePrefix``) compiled to regexes, with ASP.NET-style
constraints and optional and catch-all parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from devstack.host.indexing import FunctionDef, HttpTriggerBinding

_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?:true|false)",
    "alpha": r"[A-Za-z]+",
    "double": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "guid": r"\{?[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}\}?",
}
_PARAMETER = re.compile(r"\{([^{}]+)\}")


@dataclass
class HttpRoute:
    """A compiled route template: ``resets/{requestId}``, ``{id:int}``, ``{name?}``, ``{*rest}``."""

    definition: FunctionDef
    template: str
    pattern: re.Pattern[str]
    parameters: list[str]
    literal_segments: int

    @classmethod
    def compile(cls, definition: FunctionDef, prefix: str) -> HttpRoute:
        assert isinstance(definition.trigger, HttpTriggerBinding)
        template = "/".join(part for part in (prefix, definition.trigger.route) if part)
        parameters: list[str] = []
        regex = "".join(_segment_regex(segment, parameters) for segment in template.split("/") if segment)
        literal = sum(1 for segment in template.split("/") if segment and "{" not in segment)
        pattern = re.compile(f"^{regex}/?$", re.IGNORECASE)
        return cls(definition, template, pattern, parameters, literal)

    @property
    def trigger(self) -> HttpTriggerBinding:
        assert isinstance(self.definition.trigger, HttpTriggerBinding)
        return self.definition.trigger

    def match(self, raw_path: str) -> dict[str, str] | None:
        found = self.pattern.match(raw_path)
        if found is None:
            return None
        values = found.groups()
        return {name: unquote(value) for name, value in zip(self.parameters, values, strict=True) if value is not None}

    def allows(self, method: str) -> bool:
        return self.trigger.methods is None or method in self.trigger.methods


def _segment_regex(segment: str, parameters: list[str]) -> str:
    """Regex for ``/segment``; a segment that is one optional parameter may be absent."""
    whole = _PARAMETER.fullmatch(segment)
    if whole and whole.group(1).startswith("*"):
        parameters.append(whole.group(1)[1:].split(":")[0].rstrip("?"))
        return "(?:/(.*))?"
    if whole and whole.group(1).split(":")[0].endswith("?"):
        return f"(?:/({_parameter_regex(whole.group(1), parameters)}))?"
    parts, position = [], 0
    for found in _PARAMETER.finditer(segment):
        parts.append(re.escape(segment[position : found.start()]))
        parts.append(f"({_parameter_regex(found.group(1), parameters)})")
        position = found.end()
    parts.append(re.escape(segment[position:]))
    return "/" + "".join(parts)


def _parameter_regex(spec: str, parameters: list[str]) -> str:
    name, *constraints = spec.split(":")
    parameters.append(name.rstrip("?").split("=")[0])
    for constraint in constraints:
        known = _CONSTRAINTS.get(constraint.rstrip("?").lower())
        if known:
            return known
    return r"[^/]+"
