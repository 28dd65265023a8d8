"""Checking emitted output against Envoy itself.

- `schema`: every resource parsed into its typed Envoy message
  (envoy-data-plane), offline, naming sidecar, file and resource on failure;
- `envoy`: the real `envoy --mode validate` on each sidecar's static twin.

Both read the output directory, never the compiler's memory, so they check
exactly what ships.
"""
