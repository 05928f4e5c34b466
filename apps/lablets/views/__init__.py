"""The dashboard's lablet pages (docs/dashboard.md), one module per kind of page: `definitions` (the
definitions and their YAML editor), `instances` (the list, scheduling, one instance and its actions) and
`timeline` (the instances of one day per worker). The REST API is in `apps.lablets.api`."""
