"""The ``ceph_lab`` pytest fixture: one real lab per test session.

Use it from a conftest.py with ``from lab.pytest_plugin import ceph_lab  # noqa: F401``.
With ``HOTSWAP_LAB_REUSE=1`` the lab in $HOTSWAP_LAB_DIR (default /tmp/hotswap-lab) is used when it is
already up and is left running afterwards; otherwise a fresh lab is brought up in a temporary
directory and torn down at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.core import REQUIRED_PROGRAMS, Lab
from lab.layout import MAX_DIR_LEN


def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lab")
    if len(str(path)) <= MAX_DIR_LEN:
        return path
    return Path(tempfile.mkdtemp(prefix="hotswap-lab-", dir="/tmp"))


@pytest.fixture(scope="session")
def ceph_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    missing = [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]
    if missing:
        pytest.skip(f"the Ceph lab needs {', '.join(missing)}: run lab/install.sh as root")
    if os.environ.get("HOTSWAP_LAB_REUSE") == "1":
        existing = Lab()
        if existing.is_up():
            yield existing
            return
    lab = Lab(lab_dir(tmp_path_factory))
    lab.up()
    try:
        yield lab
    finally:
        lab.down()
