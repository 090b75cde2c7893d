"""The pure core: contract, platform matrix, device and action-result types, lifecycle, events,
errors. No awaits and no SDK imports here (import-linter keeps it so: `make lint`)."""
