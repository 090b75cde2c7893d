"""Loading the app and reading its bindings the way the Python worker indexes them
(``app.get_functions()``), with ``%TOKENS%`` and connections resolved against the settings."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func

from devstack.azurite import DEVELOPMENT_STORAGE_CONNECTION_STRING
from devstack.host.errors import HostConfigurationError
from devstack.settings import MissingSettingError, resolve_tokens

DEFAULT_CONNECTION = "AzureWebJobsStorage"

# get_functions() can be called only once per app (a second call raises): remember its result.
_INDEXED: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()


def load_app(spec: str) -> Any:
    """Import ``module:attr`` (default attr ``app``) with the working directory on sys.path."""
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the app's own start-up checks fail here too (e.g. a bad setting)
        raise HostConfigurationError(f"loading {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    app = getattr(module, attr or "app", None)
    if app is None or not hasattr(app, "get_functions"):
        raise HostConfigurationError(f"{spec!r} is not a func.FunctionApp")
    return app


def index_functions(app: Any) -> list[Any]:
    if app not in _INDEXED:
        _INDEXED[app] = list(app.get_functions())
    return _INDEXED[app]


@dataclass(frozen=True)
class QueueBinding:
    param: str
    queue_name: str
    connection: str


@dataclass(frozen=True)
class HttpTriggerBinding:
    param: str
    route: str
    methods: frozenset[str] | None
    auth_level: str


@dataclass
class FunctionDef:
    name: str
    user_function: Callable[..., Any]
    trigger: QueueBinding | HttpTriggerBinding
    outputs: list[QueueBinding]
    http_output: str | None = None
    context_param: str | None = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)

    @property
    def directory(self) -> str:
        source = inspect.getsourcefile(self.user_function)
        return str(Path(source).parent) if source else os.getcwd()


def build_function(indexed: Any, settings: Mapping[str, str]) -> FunctionDef:
    """Turn one indexed function into a :class:`FunctionDef` with ``%TOKENS%`` resolved."""
    name = indexed.get_function_name()
    bindings = json.loads(indexed.get_function_json())["bindings"]
    trigger: QueueBinding | HttpTriggerBinding | None = None
    outputs: list[QueueBinding] = []
    http_output: str | None = None
    for binding in bindings:
        kind, param = binding.get("type"), binding.get("name")
        where = f"function {name!r}, binding {param!r}"
        if kind == "queueTrigger":
            trigger = _queue_binding(binding, settings, where)
        elif kind == "httpTrigger":
            trigger = _http_binding(binding, name, settings, where)
        elif kind == "queue" and str(binding.get("direction")).upper() == "OUT":
            outputs.append(_queue_binding(binding, settings, where))
        elif kind == "http" and str(binding.get("direction")).upper() == "OUT":
            http_output = param
        else:
            raise HostConfigurationError(
                f"{where}: binding type {kind!r} is not implemented by the devstack host "
                f"(queueTrigger, httpTrigger, queue output and http output are)"
            )
    if trigger is None:
        raise HostConfigurationError(f"function {name!r} has no queueTrigger or httpTrigger")
    definition = FunctionDef(name, indexed.get_user_function(), trigger, outputs, http_output)
    definition.context_param = _check_parameters(definition)
    return definition


def _queue_binding(binding: Mapping[str, Any], settings: Mapping[str, str], where: str) -> QueueBinding:
    queue_name = resolve_tokens(str(binding["queueName"]), settings, where).lower()
    return QueueBinding(binding["name"], queue_name, binding.get("connection") or DEFAULT_CONNECTION)


def _http_binding(
    binding: Mapping[str, Any], function_name: str, settings: Mapping[str, str], where: str
) -> HttpTriggerBinding:
    route = resolve_tokens(str(binding.get("route") or function_name), settings, where).strip("/")
    methods = binding.get("methods")
    return HttpTriggerBinding(
        param=binding["name"],
        route=route,
        methods=frozenset(str(m).upper() for m in methods) if methods else None,
        auth_level=str(binding.get("authLevel") or "function").lower(),
    )


def _check_parameters(definition: FunctionDef) -> str | None:
    """Every binding needs a parameter (like the worker's indexing); returns the context param."""
    parameters = inspect.signature(definition.user_function).parameters
    bound = [definition.trigger.param, *(o.param for o in definition.outputs)]
    if definition.http_output and definition.http_output != "$return":
        bound.append(definition.http_output)
    for name in bound:
        if name != "$return" and name not in parameters:
            raise HostConfigurationError(
                f"function {definition.name!r}: binding {name!r} has no parameter of that name"
            )
    for parameter in parameters.values():
        if parameter.name == "context" or parameter.annotation in (func.Context, "func.Context", "Context"):
            return parameter.name
    return None


def connection_string_for(setting: str, settings: Mapping[str, str]) -> str:
    """The storage connection a binding's ``connection`` names (``AzureWebJobs`` prefix allowed)."""
    for name in (setting, f"AzureWebJobs{setting}"):
        value = settings.get(name)
        if value:
            if value.strip().rstrip(";").lower() == "usedevelopmentstorage=true":
                return DEVELOPMENT_STORAGE_CONNECTION_STRING
            return value
    if any(key.startswith(f"{setting}__") for key in settings):
        raise HostConfigurationError(
            f"connection {setting!r}: identity-based connections ({setting}__queueServiceUri, ...) "
            f"are not supported by the devstack host; set {setting} to a connection string"
        )
    raise MissingSettingError(setting, "a queue binding's connection")
