"""The objects handed to a user function (``func.Out``, ``func.Context``) and the queue message
encoding of trigger bodies and outputs (host.json ``messageEncoding``)."""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
from typing import Any

import azure.functions as func


class OutParam(func.Out[Any]):
    """A ``func.Out``: the value is written by the host after the function succeeds."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


class _TraceContext(func._abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(func._abc.RetryContext):
    """No retry policy applies (``@app.retry`` does not cover queue triggers)."""

    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class InvocationContext(func.Context):
    """What the Python worker passes to a ``context`` parameter."""

    _thread_local = threading.local()

    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._trace_context = _TraceContext()
        self._retry_context = _RetryContext()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._thread_local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> Any:
        return self._trace_context

    @property
    def retry_context(self) -> Any:
        return self._retry_context


def encode_outgoing(value: Any, encoding: str) -> list[str]:
    """An Out value (str, bytes, QueueMessage, or a list of them) as queue message texts."""
    if value is None:
        return []
    items = list(value) if isinstance(value, list | tuple) else [value]
    texts = []
    for item in items:
        if isinstance(item, func.QueueMessage):
            item = item.get_body()
        if isinstance(item, str):
            raw = item.encode("utf-8")
        elif isinstance(item, bytes | bytearray):
            raw = bytes(item)
        else:
            raise TypeError(f"queue output: expected str, bytes or a list of them, got {type(item).__name__}")
        texts.append(base64.b64encode(raw).decode("ascii") if encoding == "base64" else raw.decode("utf-8"))
    return texts


def decode_incoming(content: str, encoding: str) -> bytes:
    """The body the function sees; ``base64`` bodies that do not decode fail the invocation."""
    if encoding == "none":
        return content.encode("utf-8")
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("message body is not valid base64 (host.json messageEncoding is base64)") from exc
