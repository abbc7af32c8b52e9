"""The engine's SQLite store: versioned migrations and per-thread connections."""
import sqlite3
import threading

import pytest

from localsb.api.errors import StateError
from localsb.engine import store as S


def _at_version_1(path):
    conn = sqlite3.connect(path)
    conn.executescript(S.MIGRATIONS[1])
    conn.execute("INSERT INTO sandboxes (id, org_id, mode, status, spec, created_at, updated_at, last_activity) "
                 "VALUES ('sbx_old', 'org_local', 'interactive', 'idle', '{}', 1, 1, 1)")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()


def test_a_version_1_database_is_migrated_and_keeps_its_rows(tmp_path):
    path = str(tmp_path / "state.db")
    _at_version_1(path)
    st = S.Store(path)
    assert st.one("PRAGMA user_version")[0] == S.SCHEMA_VERSION == 2
    row = st.one("SELECT * FROM sandboxes WHERE id='sbx_old'")
    assert row["status"] == "idle" and row["network_egress_bytes"] == 0
    st.close()


def test_a_newer_database_is_refused(tmp_path):
    path = str(tmp_path / "state.db")
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={S.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StateError, match="newer localsb"):
        S.Store(path)


def test_connections_of_ended_threads_are_closed(tmp_path):
    """A supervisor answers each request on a new thread: their connections must not pile up."""
    st = S.Store(str(tmp_path / "state.db"))

    def use():
        st.one("SELECT 1")
    for _ in range(20):
        t = threading.Thread(target=use)
        t.start()
        t.join()
    st.one("SELECT 1")            # this thread's open prunes the ended threads' connections
    assert len(st._conns) <= 2    # this thread's, and at most the last ended one's
    st.close()
