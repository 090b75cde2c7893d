"""Application Insights through azure-monitor-opentelemetry: the exporter side of telemetry.

shared/observability/telemetry.py records spans and metrics with whatever providers it is given;
this adapter configures the Azure Monitor distro and hands its providers over. Imported only at
start-up (function_app.py), and it imports the distro only when APPLICATIONINSIGHTS_CONNECTION_STRING
is set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from shared.observability import logs
from shared.observability.telemetry import enable, is_enabled, quiet_library_tracers, telemetry_settings

# azure-monitor-opentelemetry instrumentations the app does not want: Graph calls get their own
# dependency spans (an httpx instrumentation would record each of them twice), and the app does not
# use the other HTTP client libraries. Azure SDK tracing (storage queues and tables) stays on.
_INSTRUMENTATION_OPTIONS = {
    name: {"enabled": False} for name in ("httpx", "requests", "urllib", "urllib3", "django", "fastapi", "flask")
}


def configure_from_environment(env: Mapping[str, str] | None = None) -> bool:
    """Send telemetry to Application Insights when its connection string is set; True when on.

    Called once at start-up (function_app.py). Without the connection string nothing is imported
    or configured."""
    settings = telemetry_settings(os.environ if env is None else env)
    if not settings.enabled:
        return False
    if is_enabled():
        return True
    from azure.monitor.opentelemetry import configure_azure_monitor
    from opentelemetry import metrics, trace

    options: dict[str, Any] = {}
    if settings.entra_auth:
        # One credential for every exporter (traces, metrics, logs, live metrics) instead of one each.
        from azure.identity import ManagedIdentityCredential

        options["credential"] = ManagedIdentityCredential(client_id=settings.client_id)
    app_logger = logging.getLogger(logs.APP_LOGGERS[0])
    if app_logger.level == logging.NOTSET:
        app_logger.setLevel(logging.INFO)  # the outcome records are INFO, and the KQL needs them
    configure_azure_monitor(
        connection_string=settings.connection_string,
        logger_name=logs.APP_LOGGERS[0],
        instrumentation_options=_INSTRUMENTATION_OPTIONS,
        **options,
    )
    tracer_provider = trace.get_tracer_provider()
    quiet_library_tracers(tracer_provider)
    enable(tracer_provider, metrics.get_meter_provider())
    return True
