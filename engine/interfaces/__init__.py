"""The ways in: HTTP API, chatops, schedules, with one policy (RBAC) and the audit trail."""
