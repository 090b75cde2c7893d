"""Test fixtures live in tests/plugins/: Azurite and the devstack host, the Intune simulator, and
the whole product wired together."""

pytest_plugins = [
    "tests.plugins.simulator",
    "tests.plugins.stack",
    "tests.plugins.product",
    "tests.plugins.telemetry",
]
