"""Fixtures shared by the unit tests of sandbox file access (rootfs_access, engine/files)."""
import pytest


@pytest.fixture
def host(tmp_path):
    """A host directory with a secret: what no sandbox path may ever reach."""
    d = tmp_path / "host"
    d.mkdir()
    (d / "secret").write_text("host secret\n")
    (d / "subdir").mkdir()
    return d


@pytest.fixture
def root(tmp_path):
    """A minimal sandbox root: /home/agentuity and /etc."""
    r = tmp_path / "root"
    (r / "home/agentuity").mkdir(parents=True)
    (r / "etc").mkdir()
    return r
