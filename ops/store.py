"""The app's storage, opened for an operator: the ledger table and the queues.

Settings resolve like the app's locally (environment first, then `local.settings.json` Values) and
are validated by the app's own `load_settings`. Locally that is Azurite's connection string; in
Azure the storage account has no keys (`allowSharedKeyAccess: false`), so the operator signs in
with `az login` (or any DefaultAzureCredential source) against the identity-based
`AzureWebJobsStorage__queueServiceUri` / `__tableServiceUri` settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from devstack.settings import load_settings as read_app_settings
from ops.selection import Selection
from shared.adapters.ledger import REQUEST_ROW, TableLedger, record_from_entity
from shared.adapters.storage import StorageClients
from shared.core.lifecycle import LedgerRecord
from shared.settings import POISON_SUFFIX, Settings, load_settings


def operator_settings(env: Mapping[str, str], settings_file: str | os.PathLike[str] | None) -> Settings:
    """The app settings, for a person rather than the Function App's managed identity.

    `AzureWebJobsStorage__clientId` and `AZURE_CLIENT_ID` name the app's user-assigned identity,
    which a workstation cannot use; without them StorageClients signs in with
    DefaultAzureCredential (Azure CLI, environment, or a managed identity of the machine).
    Raises shared.settings.SettingsError / devstack.settings.SettingsError naming the setting."""
    settings = load_settings(read_app_settings(settings_file, environ=env))
    return replace(settings, storage_client_id=None, azure_client_id=None)


class OpsStore:
    """Read and repair access to one deployment's ledger and queues."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients = StorageClients(settings)
        self.table: Any = self._clients.table(settings.ledger_table)
        self.ledger = TableLedger(self.table)

    async def __aenter__(self) -> OpsStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._clients.aclose()

    def queue(self, name: str) -> Any:
        return self._clients.queue(name)

    def container(self, name: str) -> Any:
        return self._clients.container(name)

    @property
    def poison_routes(self) -> list[tuple[str, str]]:
        """(poison queue, the queue its messages came from)."""
        return [
            (self.settings.requests_queue + POISON_SUFFIX, self.settings.requests_queue),
            (self.settings.followups_queue + POISON_SUFFIX, self.settings.followups_queue),
        ]

    async def get(self, request_id: str) -> LedgerRecord | None:
        """One request record; unlike TableLedger.get, a missing table raises (ResourceNotFoundError)."""
        entities = self.table.query_entities(
            "PartitionKey eq @id and RowKey eq @row", parameters={"id": request_id, "row": REQUEST_ROW}
        )
        async for entity in entities:
            return record_from_entity(entity)
        return None

    async def records(self, selection: Selection) -> list[LedgerRecord]:
        """Every request record the selection admits, in no particular order."""
        query_filter, parameters = selection.odata()
        records = []
        async for entity in self.table.query_entities(query_filter, parameters=parameters):
            record = record_from_entity(entity)
            if selection.admits(record):
                records.append(record)
        return records
