"""Hostile-input tests reuse the engine fixtures: a real redis-server and real worker processes."""

from tests.engine.conftest import engine, redis_server, worker  # noqa: F401
