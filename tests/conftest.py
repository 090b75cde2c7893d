"""Test fixtures live in tests/plugins/: the Azurite and host stack, and the Intune simulator."""

pytest_plugins = [
    "tests.plugins.simulator",
    "tests.plugins.stack",
]
