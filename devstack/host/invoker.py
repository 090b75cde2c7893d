"""Calling user functions: async ones on the host loop, sync ones in a thread pool, bounded by
``functionTimeout``; and the keyword arguments (outputs, context) an invocation gets."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from devstack.host.bindings import InvocationContext, OutParam
from devstack.host.indexing import FunctionDef


class Invoker:
    """Runs user functions: async ones on the host loop, sync ones in a thread pool."""

    def __init__(self, max_workers: int, timeout: float | None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="devstack-fn")
        self._timeout = timeout

    async def invoke(self, definition: FunctionDef, invocation_id: str, kwargs: dict[str, Any]) -> Any:
        if definition.is_async:
            call: Awaitable[Any] = definition.user_function(**kwargs)
        else:
            run = functools.partial(_call_in_thread, invocation_id, definition.user_function, kwargs)
            context = contextvars.copy_context()
            call = asyncio.get_running_loop().run_in_executor(self._executor, context.run, run)
        if self._timeout is None:
            return await call
        try:
            return await asyncio.wait_for(call, self._timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"function exceeded functionTimeout ({self._timeout:.0f} s)") from exc

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def thread_count(settings: Mapping[str, str]) -> int:
    """The worker's pool size: PYTHON_THREADPOOL_THREAD_COUNT, else Python's default."""
    configured = settings.get("PYTHON_THREADPOOL_THREAD_COUNT", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return min(32, (os.cpu_count() or 1) + 4)


def _call_in_thread(invocation_id: str, function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    InvocationContext._thread_local.invocation_id = invocation_id
    return function(**kwargs)


def context_kwargs(definition: FunctionDef, invocation_id: str) -> dict[str, Any]:
    if definition.context_param is None:
        return {}
    context = InvocationContext(invocation_id, definition.name, definition.directory)
    return {definition.context_param: context}


def output_kwargs(definition: FunctionDef) -> dict[str, OutParam]:
    return {o.param: OutParam() for o in definition.outputs if o.param != "$return"}
