from lab.pytest_plugin import ceph_lab  # noqa: F401 - the session fixture, re-exported for these tests
