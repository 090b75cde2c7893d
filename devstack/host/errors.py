"""The one error of the devstack host's start-up: what to fix in the app, host.json or settings."""

from __future__ import annotations


class HostConfigurationError(RuntimeError):
    """The app, host.json or settings cannot be run; the message says what to fix."""
