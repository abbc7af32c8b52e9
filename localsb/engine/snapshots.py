"""Snapshots: read-only btrfs snapshots of a sandbox's volume plus metadata; sandboxes start from them.

A snapshot is independent of the sandbox it came from and of the sandboxes made from it (btrfs
copy-on-write): deleting it never affects a running sandbox (docs/divergences.md).
"""
from __future__ import annotations

import os
import time

from localsb.api import errors as E
from localsb.api.models import new_id, validate_snapshot_name, validate_tag

from . import render, runtimes
from .store import dumps, loads
from .common import bounded, event, live_row

SORT_COLUMNS = {"name": "name", "created": "created_at", "size": "size_bytes", "files": "file_count"}


class Snapshots:
    def __init__(self, ctx, checkpoints):
        self.ctx = ctx
        self.checkpoints = checkpoints

    def _snapshot_row(self, snapshot_id, org_id=None, allow_public=True):
        row = self.ctx.store.one("SELECT * FROM snapshots WHERE id=? AND status='ready'", snapshot_id)
        if row is None or (org_id and row["org_id"] != org_id and not (allow_public and row["public"])):
            raise E.SnapshotNotFound(snapshot_id)
        return row

    def resolve_snapshot(self, ref: str, org_id=None):
        """snp_ id, name:tag, @org/name:tag, a bare tag, or a bare name (its 'latest' or newest)."""
        if not ref:
            raise E.ValidationError("Snapshot reference is empty")
        org_clause = "(org_id=? OR public=1)" if org_id else "1=1"
        oargs = (org_id,) if org_id else ()
        if ref.startswith("snp_"):
            return self._snapshot_row(ref, org_id)
        text = ref
        if text.startswith("@") and "/" in text:
            text = text.split("/", 1)[1]
        if ":" in text:
            name, tag = text.rsplit(":", 1)
            row = self.ctx.store.one(f"SELECT * FROM snapshots WHERE status='ready' AND {org_clause} AND name=? AND tag=? "
                                 "ORDER BY created_at DESC LIMIT 1", *oargs, name, tag)
        else:
            row = self.ctx.store.one(f"SELECT * FROM snapshots WHERE status='ready' AND {org_clause} AND tag=? "
                                 "ORDER BY (org_id=?) DESC, created_at DESC LIMIT 1", *oargs, text, org_id or "")
            if row is None:
                row = self.ctx.store.one(f"SELECT * FROM snapshots WHERE status='ready' AND {org_clause} AND name=? "
                                     "ORDER BY (tag='latest') DESC, created_at DESC LIMIT 1", *oargs, text)
        if row is None:
            raise E.SnapshotNotFound(ref)
        return row

    def _snapshot_source(self, ref, org_id):
        row = self.resolve_snapshot(ref, org_id)
        rt = runtimes.resolve(runtime_id=row["runtime_id"]) if row["runtime_id"] else runtimes.resolve("base")
        info = {"id": row["id"], "name": row["name"], "tag": row["tag"], "public": bool(row["public"])}
        if row["public"]:
            info["fullName"] = f"@{row['org_id']}/{row['name']}:{row['tag'] or 'latest'}"
            info["org"] = {"id": row["org_id"], "name": row["org_id"]}
        else:
            info["user"] = {"id": "user_local"}
        return {"runtime": rt, "snapshot": {"id": row["id"]}, "volume": row["volume"],
                "snapshot_info_json": dumps(info), "env": loads(row["env"], {}) or {}}

    def _claim_tag(self, org_id, name, tag, except_id):
        """A name:tag names one snapshot per org: the tag moves to the newest holder."""
        if tag:
            self.ctx.store.run("UPDATE snapshots SET tag=NULL WHERE org_id=? AND name=? AND tag=? AND id!=?",
                           org_id, name, tag, except_id)

    def snapshot_create(self, sandbox_id, *, name=None, description=None, tag=None, public=False,
                        org_id=None) -> dict:
        if name is not None:
            validate_snapshot_name(name)
        tag = validate_tag(tag) if tag else "latest"
        row = live_row(self.ctx, sandbox_id, org_id)
        name = name or f"snapshot-{os.urandom(4).hex()}"
        snap_id = new_id("snapshot")
        volume = os.path.join(self.ctx.pool.root, "snapshots", snap_id)
        os.makedirs(os.path.dirname(volume), exist_ok=True)
        t = time.time()
        self.ctx.store.insert("snapshots", {
            "id": snap_id, "org_id": row["org_id"], "name": name, "description": description, "tag": tag,
            "public": int(bool(public)), "sandbox_id": sandbox_id, "parent_snapshot_id": row["snapshot_id"],
            "runtime_id": row["runtime_id"], "runtime_name": row["runtime_name"], "volume": volume,
            "status": "creating", "created_at": t})
        try:
            self.checkpoints._frozen_snapshot(row, volume)
            # Sizes are counted on the sandbox's own tree (its inodes are warm in the cache; the new
            # snapshot's are cold and a walk of them costs ~8 ms per 1,000 files). The tree can
            # have moved on since the thaw; the figures are those of a moment after the snapshot.
            src = row["volume"]
            usage = self.ctx.pool.usage(os.path.join(src, "root"))
            upper = os.path.join(src, "usr.upper")
            if os.path.isdir(upper):
                u2 = self.ctx.pool.usage(upper)
                usage = {"bytes": usage["bytes"] + u2["bytes"], "files": usage["files"] + u2["files"]}
        except BaseException:
            self.ctx.store.run("DELETE FROM snapshots WHERE id=?", snap_id)
            try:
                self.ctx.pool.delete_volume(volume)
            except Exception:
                pass
            raise
        with self.ctx.store.tx() as c:
            c.execute("UPDATE snapshots SET status='ready', size_bytes=?, file_count=? WHERE id=?",
                      (usage["bytes"], usage["files"], snap_id))
        self._claim_tag(row["org_id"], name, tag, snap_id)
        event(self.ctx, sandbox_id, row["org_id"], "snapshot", {"action": "create", "snapshotId": snap_id, "name": name,
                                                           "tag": tag})
        return render.snapshot_info(self._snapshot_row(snap_id), self.ctx.org_names)

    def snapshot_list(self, *, sandbox_id=None, limit=50, offset=0, sort="created", direction="desc",
                      org_id=None) -> dict:
        col = SORT_COLUMNS.get(sort)
        if col is None:
            raise E.ValidationError(f"Invalid sort field '{sort}': expected name, created, size or files")
        if direction not in ("asc", "desc"):
            raise E.ValidationError(f"Invalid direction '{direction}': expected asc or desc")
        limit = bounded(limit, 1, 100, "limit")
        offset = bounded(offset, 0, 10 ** 9, "offset")
        where, args = ["status='ready'"], []
        if org_id:
            where.append("org_id=?"); args.append(org_id)
        if sandbox_id:
            where.append("sandbox_id=?"); args.append(sandbox_id)
        w = " AND ".join(where)
        total = self.ctx.store.one(f"SELECT COUNT(*) FROM snapshots WHERE {w}", *args)[0]
        rows = self.ctx.store.all(f"SELECT * FROM snapshots WHERE {w} ORDER BY {col} {direction}, rowid {direction} "
                              "LIMIT ? OFFSET ?", *args, limit, offset)
        return {"snapshots": [render.snapshot_info(r, self.ctx.org_names) for r in rows], "total": total}

    def snapshot_get(self, snapshot_id, *, org_id=None) -> dict:
        row = self._snapshot_row(snapshot_id, org_id)
        return render.snapshot_info(row, self.ctx.org_names, with_files=True)

    def snapshot_tag(self, snapshot_id, tag, *, org_id=None) -> dict:
        if tag is not None:
            validate_tag(tag, for_tag_command=True)
        row = self._snapshot_row(snapshot_id, org_id, allow_public=False)
        self.ctx.store.run("UPDATE snapshots SET tag=? WHERE id=?", tag, snapshot_id)
        self._claim_tag(row["org_id"], row["name"], tag, snapshot_id)
        return render.snapshot_info(self._snapshot_row(snapshot_id), self.ctx.org_names)

    def snapshot_delete(self, snapshot_id, *, org_id=None) -> None:
        row = self._snapshot_row(snapshot_id, org_id, allow_public=False)
        if self.ctx.store.run("UPDATE snapshots SET status='deleted' WHERE id=? AND status='ready'", snapshot_id) == 1:
            if row["volume"]:
                self.ctx.pool.delete_volume(row["volume"])
            self.ctx.store.run("DELETE FROM snapshots WHERE id=?", snapshot_id)

    def snapshot_files(self, row) -> list:
        return loads(row["files"]) or []
