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
import urllib.parse
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

STATE_DB = "state.db"       # <state_dir>/state.db: the database the lost-state guard protects
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB: the file is damaged (not a busy, full or read-only one)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text


def _count(path: str) -> int:
    try:
        return sum(1 for e in os.scandir(path) if not e.name.startswith("."))
    except OSError:
        return 0


def leftover_state(state_dir: str) -> list[str]:
    """What a state directory holds beyond its database: sandbox, checkpoint and snapshot volumes
    in the pool (mounting a pool image to look, as every command does) and supervisor sockets of
    live sandboxes. Empty for a fresh state directory."""
    found = []
    run = os.path.join(state_dir, "run")
    socks = [n for n in (os.listdir(run) if os.path.isdir(run) else ()) if n.startswith("sbx_")]
    if socks:
        found.append(f"{len(socks)} sandbox supervisor socket(s) in {run}")
    pool = os.path.join(state_dir, "pool")
    if os.path.exists(os.path.join(state_dir, "pool.img")):
        try:
            from localsb.linux.storage import open_pool
            pool = open_pool(state_dir).root
        except Exception:  # noqa: BLE001 - a pool that cannot be opened shows no volumes here
            pass
    for sub, label in (("sandboxes", "sandbox"), ("checkpoints", "checkpoint"), ("snapshots", "snapshot")):
        n = _count(os.path.join(pool, sub))
        if n:
            found.append(f"{n} {label} volume(s) in {os.path.join(pool, sub)}")
    return found


class Store:
    """One connection per thread: a connection shared by threads (mockcloud's worker pool) would
    mix their transactions (one thread's statements inside another's BEGIN IMMEDIATE)."""

    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._conns: list = []
        self._lock = threading.Lock()
        self._guard_lost_state()
        try:
            private_sqlite(path)    # every sandbox's env and commands: 0600
        except OSError as e:
            raise StateError(f"Cannot open state database {path}: {e.strerror or e}") from None
        try:
            self._migrate()
        except sqlite3.DatabaseError as e:
            self._close_conns()
            if _is_corrupt(e):
                raise self._damaged(e) from None
            raise
        except BaseException:
            self._close_conns()
            raise
        _OPEN.add(self)

    # a state database that is gone or damaged -----------------------------------------------------
    def _damaged(self, exc: BaseException) -> StateError:
        sd = os.path.dirname(os.path.abspath(self.path))
        return StateError(
            f"The state database {self.path} is damaged ({exc}): localsb cannot read the sandboxes, "
            f"executions and snapshots it records. Keep a copy and take it out of the way "
            f"(mv {self.path} {self.path}.damaged), then restore it from a backup; without one, "
            f"stop what uses {sd} and move the whole state directory aside "
            f"(mv {sd} {sd}.damaged) to start afresh")

    def _guard_lost_state(self, what: str | None = None) -> None:
        """A missing or empty state.db is created silently only in a fresh state directory: where
        the pool still holds sandbox, checkpoint or snapshot volumes, or supervisors still listen,
        starting from an empty database would orphan all of them for good (issue 16 item 5).
        Checked before SQLite touches the file, so nothing is created or locked."""
        if os.path.basename(self.path) != STATE_DB:
            return
        if what is None:
            try:
                size = os.path.getsize(self.path)
            except FileNotFoundError:
                size = None
            except OSError:
                return              # the open below says what is wrong
            if size:
                return
            what = "is missing" if size is None else "is empty (0 bytes)"
        sd = os.path.dirname(os.path.abspath(self.path))
        evidence = leftover_state(sd)
        if not evidence:
            return
        self._close_conns()
        raise StateError(
            f"The state database {self.path} {what}, but the state directory {sd} still holds "
            f"{'; '.join(evidence)}: starting from an empty database would lose track of them. "
            f"Restore {STATE_DB} from a backup; or, to give them up, stop what uses {sd} and move "
            f"the whole state directory aside (mv {sd} {sd}.damaged) to start afresh")

    @property
    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            try:
                # mode=rw: a database removed under a running process (a supervisor opens one
                # connection per thread) is an error, never silently re-created empty
                c = sqlite3.connect(f"file:{urllib.parse.quote(os.path.abspath(self.path))}?mode=rw",
                                    uri=True, timeout=10, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as e:
                if not os.path.exists(self.path):
                    raise StateError(
                        f"The state database {self.path} is missing: it was removed while localsb was "
                        f"using it. Restore it from a backup, or move the state directory aside "
                        f"(mv {os.path.dirname(os.path.abspath(self.path))} ...) to start afresh") from None
                raise StateError(f"Cannot open state database {self.path}: {e}") from None
            c.row_factory = sqlite3.Row
            try:
                _configure(c)
            except sqlite3.DatabaseError as e:
                c.close()
                if _is_corrupt(e):
                    raise self._damaged(e) from None
                raise
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
        if version == 0:
            self._guard_lost_state("has no tables")
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
        try:
            return self.conn.execute(sql, args).fetchone()
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) if _is_corrupt(e) else e from None

    def all(self, sql: str, *args):
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) if _is_corrupt(e) else e from None

    def run(self, sql: str, *args) -> int:
        try:
            cur = self.conn.execute(sql, args)
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) if _is_corrupt(e) else e from None
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
