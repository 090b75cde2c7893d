"""App settings as the devstack sees them, resolved like the Functions host does locally.

Order: the process environment first, then the ``Values`` of ``local.settings.json`` (Core Tools
does the same: an exported variable wins over the file). Binding strings may contain ``%NAME%``
tokens, also embedded (``%RESET_REQUESTS_QUEUE%-poison``), which resolve against these settings.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

DEFAULT_SETTINGS_FILE = "local.settings.json"

_TOKEN = re.compile(r"%([^%]+)%")


class SettingsError(ValueError):
    """A setting is missing or a settings file is unusable; the message names which."""


class MissingSettingError(SettingsError):
    """A ``%NAME%`` token or a connection names a setting that is not defined."""

    def __init__(self, name: str, where: str = "") -> None:
        self.name = name
        suffix = f" (referenced by {where})" if where else ""
        super().__init__(
            f"app setting {name!r} is not set{suffix}: set it in the environment or in "
            f"local.settings.json Values"
        )


class AppSettings(Mapping[str, str]):
    """Read-only view: environment first, then local.settings.json ``Values``."""

    def __init__(self, environ: Mapping[str, str], file_values: Mapping[str, str]) -> None:
        self._environ = dict(environ)
        self._file_values = dict(file_values)

    def __getitem__(self, name: str) -> str:
        if name in self._environ:
            return self._environ[name]
        return self._file_values[name]

    def __iter__(self) -> Iterator[str]:
        yield from self._environ
        yield from (k for k in self._file_values if k not in self._environ)

    def __len__(self) -> int:
        return len(set(self._environ) | set(self._file_values))

    @property
    def file_values(self) -> Mapping[str, str]:
        """The ``Values`` of local.settings.json only (what Core Tools exports to the worker)."""
        return dict(self._file_values)


def read_local_settings(path: str | os.PathLike[str]) -> dict[str, str]:
    """``Values`` of a local.settings.json; a missing file is an empty mapping (like Core Tools)."""
    file = Path(path)
    if not file.exists():
        return {}
    try:
        document = json.loads(file.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SettingsError(f"cannot read {file}: {exc}") from exc
    values = document.get("Values", {}) if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise SettingsError(f"{file}: 'Values' must be a JSON object")
    if document.get("IsEncrypted") is True:
        raise SettingsError(f"{file}: encrypted local.settings.json is not supported by the devstack")
    return {str(k): _as_setting_value(v) for k, v in values.items()}


def _as_setting_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def load_settings(
    path: str | os.PathLike[str] | None = DEFAULT_SETTINGS_FILE,
    environ: Mapping[str, str] | None = None,
) -> AppSettings:
    """Settings for the host: ``environ`` (default ``os.environ``) over the file's ``Values``."""
    file_values = read_local_settings(path) if path is not None else {}
    return AppSettings(os.environ if environ is None else environ, file_values)


def resolve_tokens(value: str, settings: Mapping[str, str], where: str = "") -> str:
    """Replace every ``%NAME%`` in ``value`` by the setting; raise naming the first missing one."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in settings:
            raise MissingSettingError(name, where)
        return settings[name]

    return _TOKEN.sub(substitute, value)
