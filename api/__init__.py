"""The HTTP API: support API, auth, audit, OpenAPI, health and metrics."""
