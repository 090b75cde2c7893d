"""devstack.azurite: the project-local Azurite process (own instances, not the session one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.storage.queue import QueueServiceClient

from devstack.azurite import Azurite, AzuriteError, start_azurite


def _queue_names(connection: str) -> list[str]:
    with QueueServiceClient.from_connection_string(connection) as service:
        return [queue.name for queue in service.list_queues()]


def test_on_disk_data_survives_a_restart_on_the_same_ports(tmp_path: Path) -> None:
    with Azurite(tmp_path / "data") as azurite:
        ports = azurite.ports
        QueueServiceClient.from_connection_string(azurite.connection_string).create_queue("kept")
        azurite.restart()
        assert azurite.ports == ports
        assert _queue_names(azurite.connection_string) == ["kept"]
        pid = azurite.pid
    assert not azurite.running and pid is not None


async def test_async_context_manager_in_memory() -> None:
    async with start_azurite() as azurite:
        assert "QueueEndpoint=http://127.0.0.1:" in azurite.connection_string
        assert _queue_names(azurite.connection_string) == []
    assert not azurite.running


def test_missing_install_says_to_run_npm_ci(tmp_path: Path) -> None:
    with pytest.raises(AzuriteError, match="npm ci"):
        Azurite(executable=tmp_path / "azurite").start()
