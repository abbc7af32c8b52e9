"""Issue 16 item 5: a state database that is missing, empty or damaged while the state directory
still holds sandboxes is an error that names the file, what was found and the way out; a fresh
state directory still gets its database silently."""
from __future__ import annotations

import json
import os
import sqlite3

import pytest


def _db(state_dir: str) -> str:
    return os.path.join(state_dir, "state.db")


def _backup(state_dir: str) -> bytes:
    """Everything in one file (the WAL checkpointed into it), as bytes to put back later."""
    with sqlite3.connect(_db(state_dir)) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(_db(state_dir), "rb") as f:
        return f.read()


def _restore(state_dir: str, data: bytes) -> None:
    with open(_db(state_dir), "wb") as f:     # same inode: open connections see it again
        f.write(data)


def _one_line_error(p) -> str:
    err = p.stderr.decode()
    assert p.returncode != 0, (p.stdout, err)
    assert err.count("\n") == 1 and "Traceback" not in err and "internal error" not in err, err
    return err


def test_fresh_state_dir_creates_its_database_silently(cli, state_dir):
    assert not os.path.exists(_db(state_dir))
    p = cli("sb", "list", "--json", check=0)
    assert json.loads(p.stdout)["total"] == 0 and p.stderr == b""
    assert os.path.getsize(_db(state_dir)) > 0


@pytest.mark.parametrize("damage", ["truncate", "remove"])
def test_lost_database_with_a_live_sandbox_is_an_error_naming_it(cli, state_dir, damage):
    sid = json.loads(cli("sb", "create", "--json", check=0).stdout)["sandboxId"]
    saved = _backup(state_dir)
    if damage == "truncate":
        os.truncate(_db(state_dir), 0)
    else:
        os.rename(_db(state_dir), _db(state_dir) + ".away")
    try:
        for _ in range(2):       # the same answer each time: nothing was re-created in between
            err = _one_line_error(cli("sb", "list"))
            assert _db(state_dir) in err
            assert ("is empty (0 bytes)" if damage == "truncate" else "is missing") in err
            assert "1 sandbox volume(s)" in err and "mv " in err, err
        if damage == "remove":
            assert not os.path.exists(_db(state_dir))
        else:
            assert os.path.getsize(_db(state_dir)) == 0
    finally:
        if damage == "truncate":
            _restore(state_dir, saved)
        else:
            os.replace(_db(state_dir) + ".away", _db(state_dir))
    p = cli("sb", "exec", sid, "--", "echo", "still here", check=0)
    assert p.stdout == b"still here\n"
    cli("sb", "delete", sid, "--confirm", check=0)


def test_garbage_database_names_the_file_and_the_way_out(cli, state_dir):
    cli("sb", "list", check=0)
    with open(_db(state_dir), "r+b") as f:
        f.write(os.urandom(4096))
    for name in ("-wal", "-shm"):
        if os.path.exists(_db(state_dir) + name):
            os.unlink(_db(state_dir) + name)
    try:
        err = _one_line_error(cli("sb", "list"))
        assert _db(state_dir) in err and "damaged" in err and f"mv {_db(state_dir)}" in err, err
        assert cli("sb", "list").returncode == 1
    finally:
        os.unlink(_db(state_dir))
    cli("sb", "list", check=0)
