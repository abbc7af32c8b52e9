"""The state store: one SQLite database (WAL) per state directory, the source of truth.

Any process may open it: a CLI invocation, mockcloud, a supervisor. Schema changes are numbered
migrations; a database written by a newer localsb is refused with a clear message.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import weakref

from localsb.api.errors import StateError
from localsb.linux.private import private_sqlite

SCHEMA_VERSION = 2

MIGRATIONS = {
    1: """
    CREATE TABLE sandboxes (
        id TEXT PRIMARY KEY, org_id TEXT NOT NULL, project_id TEXT, name TEXT, description TEXT,
        mode TEXT NOT NULL, status TEXT NOT NULL, runtime_id TEXT, runtime_name TEXT,
        snapshot_id TEXT, spec TEXT NOT NULL, env TEXT NOT NULL DEFAULT '{}',
        cgroup TEXT, volume TEXT, init_pid INTEGER, supervisor_pid INTEGER, supervisor_start TEXT,
        owner_pid INTEGER, owner_start TEXT, exit_code INTEGER, error TEXT,
        executions INTEGER NOT NULL DEFAULT 0, cpu_time_ms INTEGER, memory_byte_sec INTEGER,
        created_at REAL NOT NULL, updated_at REAL NOT NULL, terminated_at REAL,
        last_activity REAL NOT NULL, paused_at REAL
    );
    CREATE INDEX sandboxes_org ON sandboxes(org_id, created_at);
    CREATE INDEX sandboxes_status ON sandboxes(status);
    CREATE TABLE executions (
        id TEXT PRIMARY KEY, sandbox_id TEXT NOT NULL, org_id TEXT NOT NULL, type TEXT NOT NULL,
        status TEXT NOT NULL, command TEXT NOT NULL, exit_code INTEGER, error TEXT,
        started_at REAL, completed_at REAL, duration_ms INTEGER, output_truncated INTEGER DEFAULT 0,
        created_at REAL NOT NULL, seq INTEGER NOT NULL
    );
    CREATE INDEX executions_sandbox ON executions(sandbox_id, seq);
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY, sandbox_id TEXT NOT NULL, org_id TEXT NOT NULL, command TEXT NOT NULL,
        status TEXT NOT NULL, exit_code INTEGER, error TEXT, pid INTEGER,
        started_at REAL, completed_at REAL, created_at REAL NOT NULL, seq INTEGER NOT NULL
    );
    CREATE INDEX jobs_sandbox ON jobs(sandbox_id, seq);
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, sandbox_id TEXT NOT NULL,
        org_id TEXT NOT NULL, type TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL
    );
    CREATE INDEX events_sandbox ON events(sandbox_id, seq);
    CREATE TABLE checkpoints (
        id TEXT PRIMARY KEY, sandbox_id TEXT NOT NULL, name TEXT NOT NULL, parent TEXT NOT NULL,
        volume TEXT NOT NULL, created_at REAL NOT NULL, UNIQUE(sandbox_id, name)
    );
    CREATE TABLE snapshots (
        id TEXT PRIMARY KEY, org_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT,
        tag TEXT, public INTEGER NOT NULL DEFAULT 0, sandbox_id TEXT, parent_snapshot_id TEXT,
        runtime_id TEXT, runtime_name TEXT, volume TEXT, size_bytes INTEGER NOT NULL DEFAULT 0,
        file_count INTEGER NOT NULL DEFAULT 0, files TEXT, metadata TEXT, env TEXT,
        dependencies TEXT, content_hash TEXT, status TEXT NOT NULL DEFAULT 'ready',
        created_at REAL NOT NULL
    );
    CREATE INDEX snapshots_org ON snapshots(org_id, created_at);
    CREATE TABLE usage (
        sandbox_id TEXT PRIMARY KEY, org_id TEXT NOT NULL, cpu_usec INTEGER NOT NULL DEFAULT 0,
        memory_byte_sec REAL NOT NULL DEFAULT 0, sampled_at REAL
    );
    """,
    # bytes the sandbox sent on network links already removed (a restore replaces the link)
    2: """
    ALTER TABLE sandboxes ADD COLUMN network_egress_bytes INTEGER NOT NULL DEFAULT 0
    """,
}


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA foreign_keys=OFF")


_OPEN: "weakref.WeakSet[Store]" = weakref.WeakSet()


class Store:
    """One connection per thread: a connection shared by threads (mockcloud's worker pool) would
    mix their transactions (one thread's statements inside another's BEGIN IMMEDIATE)."""

    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._conns: list = []
        self._lock = threading.Lock()
        try:
            private_sqlite(path)    # every sandbox's env and commands: 0600
        except OSError as e:
            raise StateError(f"Cannot open state database {path}: {e.strerror or e}") from None
        self._migrate()
        _OPEN.add(self)

    @property
    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            try:
                c = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as e:
                raise StateError(f"Cannot open state database {self.path}: {e}") from None
            c.row_factory = sqlite3.Row
            _configure(c)
            self._local.conn = c
            me = threading.current_thread()
            with self._lock:
                # A thread that ended leaves its connection (two descriptors) behind: a supervisor
                # answers each request on a thread of its own, so close those here.
                gone = [conn for t, conn in self._conns if not t.is_alive()]
                self._conns = [(t, conn) for t, conn in self._conns if t.is_alive()] + [(me, c)]
            for conn in gone:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
        return c

    def _close_conns(self) -> bool:
        with self._lock:
            conns, self._conns = [conn for _, conn in self._conns], []
        for c in conns:
            try:
                c.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()
        return bool(conns)

    @staticmethod
    def close_all() -> list:
        """Close every connection of this process (before a fork: SQLite is not fork-safe); they
        reopen on next use."""
        return [s for s in list(_OPEN) if s._close_conns()]

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(
                f"The state database {self.path} was written by a newer localsb (schema {version}, "
                f"this localsb knows {SCHEMA_VERSION}). Upgrade localsb or use another LOCALSB_HOME.")
        if version == SCHEMA_VERSION:
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in MIGRATIONS[v].split(";"):
                    if stmt.strip():
                        self.conn.execute(stmt)
                self.conn.execute(f"PRAGMA user_version={v}")
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    # small helpers -------------------------------------------------------------------------------
    def one(self, sql: str, *args):
        return self.conn.execute(sql, args).fetchone()

    def all(self, sql: str, *args):
        return self.conn.execute(sql, args).fetchall()

    def run(self, sql: str, *args) -> int:
        cur = self.conn.execute(sql, args)
        return cur.rowcount

    def tx(self):
        return _Tx(self.conn)

    def insert(self, table: str, row: dict) -> None:
        keys = ",".join(row)
        marks = ",".join("?" for _ in row)
        self.conn.execute(f"INSERT INTO {table} ({keys}) VALUES ({marks})", tuple(row.values()))

    def update(self, table: str, key: str, row: dict) -> int:
        sets = ",".join(f"{k}=?" for k in row)
        return self.conn.execute(f"UPDATE {table} SET {sets} WHERE id=?", (*row.values(), key)).rowcount

    def close(self) -> None:
        self._close_conns()
        _OPEN.discard(self)


class _Tx:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, et, ev, tb):
        self.conn.execute("COMMIT" if et is None else "ROLLBACK")
        return False


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def loads(text, default=None):
    if text is None:
        return default
    return json.loads(text)


def proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: with the pid it names a process unambiguously."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        fields = data[data.rindex(b")") + 2:].split()
        if fields[0] in (b"Z", b"X"):
            return None  # a zombie has exited: it is not alive for repair's purpose
        return fields[19].decode()
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid: int | None, start: str | None) -> bool:
    if not pid:
        return False
    st = proc_start_time(pid)
    return st is not None and (start is None or st == start)


def now() -> float:
    return time.time()


__all__ = ["Store", "dumps", "loads", "proc_start_time", "process_alive", "now", "os"]
