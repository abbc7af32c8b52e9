"""mockcloud's own state: organizations, API keys and the stream-URL secret, in SQLite.

Sandboxes, executions, snapshots and the rest live in the engine's state directory
(``<state>/engine``); this database holds only what the hosted service keeps outside the sandbox
engine. API keys are stored as SHA-256 hashes: the clear key is printed once by
``mockcloud keys create`` and never again.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading

from localsb.api.errors import StateError, ValidationError
from localsb.api.models import new_id, now_iso
from localsb.linux.private import private_dir, private_sqlite

SCHEMA_VERSION = 1
DB_NAME = "mockcloud.db"
# The clear key's visible prefix, so a leaked key is recognisable in logs and scanners.
KEY_PREFIX = "mck_"

_MIGRATIONS = {
    1: """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE orgs (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        );
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            key_hash TEXT NOT NULL UNIQUE,
            org_id TEXT NOT NULL REFERENCES orgs(id),
            created_at TEXT NOT NULL
        );
    """,
}


def default_state_dir() -> str:
    return os.environ.get("MOCKCLOUD_HOME") or "/var/lib/mockcloud"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class Store:
    """Orgs and API keys of one mockcloud state directory.

    Safe to share between threads (one connection per thread) and between processes
    (``mockcloud keys create`` writes while the server reads; SQLite WAL).
    """

    def __init__(self, state_dir: str):
        self.state_dir = os.path.abspath(state_dir)
        self.path = os.path.join(self.state_dir, DB_NAME)
        try:
            private_dir(self.state_dir)     # 0700, forced: it holds the stream secret and stdin
        except OSError as e:
            raise StateError(f"Cannot create mockcloud state directory {self.state_dir}: {e.strerror}") from None
        try:
            private_sqlite(self.path)       # key hashes and the stream-URL secret: 0600
        except OSError as e:
            raise StateError(f"Cannot open {self.path}: {e.strerror or e}") from None
        self._local = threading.local()
        # Keys are never revoked, so a positive lookup can be cached for the life of the process;
        # a miss always goes to the database so that keys created by another process are seen.
        self._key_cache: dict[str, tuple[str, str]] = {}
        self._migrate()
        self.stream_secret = self._stream_secret()

    # connection --------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            except sqlite3.Error as e:
                raise StateError(f"Cannot open {self.path}: {e}") from None
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def _migrate(self) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"{self.path} has schema version {version}, newer than this mockcloud "
                    f"understands ({SCHEMA_VERSION}); upgrade mockcloud")
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in _MIGRATIONS[v].split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {v}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _stream_secret(self) -> bytes:
        conn = self._conn()
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('stream_secret', ?)",
                     (secrets.token_hex(32),))
        return bytes.fromhex(conn.execute("SELECT value FROM meta WHERE key='stream_secret'").fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # orgs ----------------------------------------------------------------------------------------
    def org_ensure(self, name: str) -> dict:
        """Return the org called ``name``, creating it (id ``org_…``) if needed."""
        if not isinstance(name, str) or not name.strip() or len(name) > 128:
            raise ValidationError("Invalid organization name: give 1 to 128 characters")
        name = name.strip()
        conn = self._conn()
        row = conn.execute("SELECT id, name FROM orgs WHERE name=?", (name,)).fetchone()
        if row:
            return {"id": row[0], "name": row[1]}
        org_id = new_id("org")
        conn.execute("INSERT OR IGNORE INTO orgs(id, name, created_at) VALUES (?,?,?)",
                     (org_id, name, now_iso()))
        row = conn.execute("SELECT id, name FROM orgs WHERE name=?", (name,)).fetchone()
        return {"id": row[0], "name": row[1]}

    def org_get(self, org_id: str) -> dict | None:
        row = self._conn().execute("SELECT id, name FROM orgs WHERE id=?", (org_id,)).fetchone()
        return {"id": row[0], "name": row[1]} if row else None

    def org_list(self) -> list[dict]:
        return [{"id": r[0], "name": r[1]} for r in
                self._conn().execute("SELECT id, name FROM orgs ORDER BY created_at, id")]

    # keys ----------------------------------------------------------------------------------------
    def key_create(self, org_name: str) -> dict:
        """Make a new API key for the org ``org_name`` (created if needed). Returns the clear key."""
        org = self.org_ensure(org_name)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = new_id("key")
        self._conn().execute("INSERT INTO api_keys(id, key_hash, org_id, created_at) VALUES (?,?,?,?)",
                             (key_id, hash_key(key), org["id"], now_iso()))
        return {"id": key_id, "key": key, "orgId": org["id"], "orgName": org["name"]}

    def key_list(self) -> list[dict]:
        return [{"id": r[0], "orgId": r[1], "orgName": r[2], "createdAt": r[3]} for r in self._conn().execute(
            "SELECT k.id, k.org_id, o.name, k.created_at FROM api_keys k JOIN orgs o ON o.id = k.org_id "
            "ORDER BY k.created_at, k.id")]

    def key_org(self, key: str) -> tuple[str, str] | None:
        """(org id, org name) of a clear API key, or None when the key is unknown."""
        h = hash_key(key)
        hit = self._key_cache.get(h)
        if hit is not None:
            return hit
        row = self._conn().execute(
            "SELECT o.id, o.name FROM api_keys k JOIN orgs o ON o.id = k.org_id WHERE k.key_hash=?",
            (h,)).fetchone()
        if row is None:
            return None
        self._key_cache[h] = (row[0], row[1])
        return self._key_cache[h]

