"""The HTTP API: one module per resource, each declaring its endpoints with `api.spec`."""
