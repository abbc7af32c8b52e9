"""Issue 4 on real sandboxes: what a sandbox plants can never reach host files; paused sandboxes are
read without being thawed; archives round-trip."""
from __future__ import annotations

import hashlib
import io
import os

import pytest

from localsb.api import errors as E
from localsb.api.specs import CreateSpec


def ex(engine, sid, script):
    out = io.BytesIO()
    r = engine.sandbox_execute(sid, ["sh", "-c", script], stdout=out, stderr=io.BytesIO())
    assert r["exitCode"] == 0, out.getvalue()
    return out.getvalue().decode()


@pytest.fixture
def sbx(engine):
    sid = engine.sandbox_create(CreateSpec())["sandboxId"]
    yield sid
    engine.sandbox_destroy(sid)


def test_planted_symlinks_never_reach_the_host(engine, sbx, tmp_path):
    host_file = tmp_path / "host.txt"
    host_file.write_text("host secret")
    ex(engine, sbx, f"ln -s {host_file} planted; ln -s /etc/shadow shadow; ln -s ../../../../../.. up;"
                    f" ln -s {tmp_path} dirlink; ln -s loop1 loop2; ln -s loop2 loop1")
    buf = io.BytesIO()
    with pytest.raises(E.NotFound):
        engine.fs_read(sbx, "planted", buf)           # resolved inside the sandbox: no such file there
    engine.fs_read(sbx, "shadow", buf)
    assert b"root:*:" in buf.getvalue()               # the sandbox's own /etc/shadow
    with pytest.raises(E.LocalsbError):
        engine.fs_write(sbx, [{"path": "dirlink/evil.txt", "content": b"x"}])
    assert sorted(os.listdir(tmp_path)) == ["host.txt"]
    with pytest.raises(E.ValidationError):
        engine.fs_read(sbx, "loop1", io.BytesIO())
    engine.fs_write(sbx, [{"path": "up/etc/passwd-test", "content": b"inside"}])
    assert not os.path.exists("/etc/passwd-test")
    assert ex(engine, sbx, "cat /etc/passwd-test") == "inside"
    assert host_file.read_text() == "host secret"


def test_paused_sandbox_is_read_without_thaw(engine, sbx):
    ex(engine, sbx, "echo data > f.txt")
    engine.sandbox_pause(sbx)
    buf = io.BytesIO()
    engine.fs_read(sbx, "f.txt", buf)
    assert buf.getvalue() == b"data\n"
    assert [f["path"] for f in engine.fs_list(sbx, ".")["files"]] == ["f.txt"]
    assert engine.sandbox_get(sbx)["status"] == "suspended"


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_download_upload_round_trip(engine, sbx, fmt):
    ex(engine, sbx, "mkdir -p t/sub && for i in $(seq 1 300); do echo $i > t/sub/f$i; done; ln -s sub/f1 t/link;"
                    " chmod 750 t/sub/f2; : > t/empty; head -c 3000000 /dev/urandom > t/big")
    before = ex(engine, sbx, "cd t && find . -printf '%p %y %m %s %l\\n' | sort | sha256sum; cat $(find . -type f | sort)"
                             " | sha256sum")
    buf = io.BytesIO()
    engine.fs_download(sbx, "t", fmt, buf)
    buf.seek(0)
    engine.fs_upload(sbx, "copy", "", buf)            # format detected from the content
    after = ex(engine, sbx, "cd copy && find . -printf '%p %y %m %s %l\\n' | sort | sha256sum; cat $(find . -type f |"
                            " sort) | sha256sum")
    assert after == before
    assert hashlib.sha256(buf.getvalue()).hexdigest()
