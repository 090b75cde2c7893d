"""Batch storage (docs/contract.md#batches): the `BatchStore` port on a blob container of the app's
storage account, and the `BatchItems` port on the ledger table.

A batch's blobs live under `<batchId>/`: `batch.json` (the record, written conditionally on its
ETag like the ledger) and `items-<payload hash>-<k>.json` (the item list in chunks of 1,000 `[kind, value]` pairs:
a 10,000-item list does not fit a 64 KiB queue message). The items' ledger records are read with a
PartitionKey range (`<batchId>.` up to `<batchId>/`): request ids `<batchId>.<n>` sort together,
so a batch's progress is one query, 1,000 records a page, with only the columns it needs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.adapters.storage import storage_errors
from shared.core.batches import BatchRecord, ItemRow, item_number, status_of_state
from shared.core.errors import StorageConflict

BATCH_CONTAINER = "passcode-reset-batches"
RECORD_BLOB = "batch.json"
_JSON = "application/json"


def _odata_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class BlobBatchStore:
    """Batch records and item lists in one blob container (azure-storage-blob, async)."""

    def __init__(self, container_client: Any) -> None:
        self._container = container_client

    async def get(self, batch_id: str) -> BatchRecord | None:
        blob = self._container.get_blob_client(f"{batch_id}/{RECORD_BLOB}")
        with storage_errors("batch read"):
            try:
                downloader = await blob.download_blob()
                content = await downloader.readall()
            except ResourceNotFoundError:
                return None
        return BatchRecord.from_json(content, etag=downloader.properties.etag)

    async def create(self, record: BatchRecord) -> BatchRecord:
        blob = self._container.get_blob_client(f"{record.batch_id}/{RECORD_BLOB}")
        with storage_errors("batch insert"):
            try:
                result = await blob.upload_blob(record.to_json(), overwrite=False, content_settings=_content_settings())
            except ResourceExistsError as exc:
                raise StorageConflict(f"batch {record.batch_id} exists") from exc
        return replace(record, etag=result.get("etag"))

    async def replace(self, record: BatchRecord) -> BatchRecord:
        blob = self._container.get_blob_client(f"{record.batch_id}/{RECORD_BLOB}")
        with storage_errors("batch update"):
            try:
                result = await blob.upload_blob(
                    record.to_json(),
                    overwrite=True,
                    etag=record.etag,
                    match_condition=MatchConditions.IfNotModified,
                    content_settings=_content_settings(),
                )
            except (ResourceModifiedError, ResourceNotFoundError) as exc:
                raise StorageConflict(f"batch {record.batch_id} changed concurrently") from exc
        return replace(record, etag=result.get("etag"))

    async def write_chunk(self, batch_id: str, payload_hash: str, index: int, items: list[list[str]]) -> None:
        blob = self._container.get_blob_client(_chunk_name(batch_id, payload_hash, index))
        with storage_errors("batch items write"):
            await blob.upload_blob(
                json.dumps(items, separators=(",", ":")), overwrite=True, content_settings=_content_settings()
            )

    async def read_chunk(self, batch_id: str, payload_hash: str, index: int) -> list[list[str]]:
        blob = self._container.get_blob_client(_chunk_name(batch_id, payload_hash, index))
        with storage_errors("batch items read"):
            downloader = await blob.download_blob()
            return list(json.loads(await downloader.readall()))


def _chunk_name(batch_id: str, payload_hash: str, index: int) -> str:
    return f"{batch_id}/items-{payload_hash[:16]}-{index:05d}.json"


def _content_settings() -> Any:
    from azure.storage.blob import ContentSettings

    return ContentSettings(content_type=_JSON)


class TableBatchItems:
    """A batch's item rows from the ledger table (the `BatchItems` port)."""

    COUNT_COLUMNS = ("PartitionKey", "State")
    DETAIL_COLUMNS = ("PartitionKey", "State", "DeviceId", "Platform", "Action", "LastEvent")

    def __init__(self, table_client: Any) -> None:
        self._table = table_client

    async def rows(self, batch_id: str, items: int, *, details: bool) -> list[ItemRow]:
        # '/' is the character after '.': the range holds exactly the ids starting `<batchId>.`.
        query = (
            f"PartitionKey ge {_odata_literal(batch_id + '.')} and PartitionKey lt {_odata_literal(batch_id + '/')}"
            " and RowKey eq 'request'"
        )
        columns = self.DETAIL_COLUMNS if details else self.COUNT_COLUMNS
        rows: list[ItemRow] = []
        with storage_errors("batch items query"):
            async for entity in self._table.query_entities(query, select=list(columns), results_per_page=1000):
                n = item_number(batch_id, entity["PartitionKey"])
                if n is None or n > items:
                    continue  # another batch whose id extends this one (`<batchId>.x.1`)
                rows.append(_row(n, entity, details))
        rows.sort(key=lambda row: row.n)
        return rows


def _row(n: int, entity: Any, details: bool) -> ItemRow:
    status = status_of_state(str(entity.get("State") or ""))
    if not details:
        return ItemRow(n=n, request_id=entity["PartitionKey"], status=status)
    reason = None
    event = entity.get("LastEvent")
    if event:
        reason = ((json.loads(event).get("data") or {}).get("reason") or {}).get("code")
    return ItemRow(
        n=n,
        request_id=entity["PartitionKey"],
        status=status,
        reason_code=reason,
        device_id=entity.get("DeviceId") or None,
        platform=entity.get("Platform") or None,
        action=entity.get("Action") or None,
    )
