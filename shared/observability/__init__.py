"""Structured logs and OpenTelemetry (Application Insights when configured)."""
