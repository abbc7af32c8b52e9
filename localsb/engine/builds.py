"""Snapshot builds, server side: init (content-hash check), archive upload, finalize.

The hosted protocol (reference/hosted-api.md §2.7, §5) in engine form, so that the local backend
and mockcloud share it: the client resolves globs and hashes; the engine compares the hash with
the newest snapshot of the same name and tag, receives the tar.gz, and builds a read-only volume
from the runtime image with the files under /home/agentuity.
"""
from __future__ import annotations

import os
import time

from localsb.api import errors as E
from localsb.api.models import new_id, validate_snapshot_name, validate_tag
from localsb.linux.private import private_opener

from . import render, runtimes
from .store import dumps, loads


class Builds:
    def __init__(self, ctx, snapshots):
        self.ctx = ctx
        self.snapshots = snapshots

    def _upload_path(self, snapshot_id: str) -> str:
        return os.path.join(self.ctx.state_dir, "out", f"build-{snapshot_id}.tar.gz")

    def snapshot_build_init(self, body: dict, *, org_id=None) -> dict:
        if not isinstance(body, dict) or not isinstance(body.get("runtime"), str) or not body["runtime"]:
            raise E.ValidationError("runtime is required (name:tag like bun:1, or a runtime id srt_...)")
        rt = runtimes.resolve(runtime_id=body["runtime"]) if body["runtime"].startswith("srt_") else \
            runtimes.resolve(body["runtime"])
        runtimes.require_buildable(rt)
        name = body.get("name")
        if name is not None:
            validate_snapshot_name(name)
        tag = validate_tag(body.get("tag") or "latest")
        org = org_id or "org_local"
        content_hash = body.get("contentHash")
        if name and content_hash and not body.get("force"):
            row = self.ctx.store.one("SELECT * FROM snapshots WHERE org_id=? AND name=? AND tag=? AND status='ready' "
                                 "ORDER BY created_at DESC LIMIT 1", org, name, tag)
            if row is not None and row["content_hash"] == content_hash:
                return {"unchanged": True, "existingId": row["id"], "existingName": row["name"],
                        "existingTag": row["tag"]}
        snap_id = new_id("snapshot")
        self.ctx.store.insert("snapshots", {
            "id": snap_id, "org_id": org, "name": name or f"snapshot-{os.urandom(4).hex()}",
            "description": body.get("description"), "tag": tag, "public": int(bool(body.get("public"))),
            "runtime_id": rt["id"], "runtime_name": rt["name"], "content_hash": content_hash,
            "status": "building", "created_at": time.time()})
        return {"snapshotId": snap_id}

    def _building_row(self, snapshot_id, org_id):
        row = self.ctx.store.one("SELECT * FROM snapshots WHERE id=? AND status='building'", snapshot_id)
        if row is None or (org_id and row["org_id"] != org_id):
            raise E.SnapshotNotFound(snapshot_id)
        return row

    def snapshot_build_upload(self, snapshot_id: str, src, *, org_id=None, limit: int = 8 << 30) -> dict:
        self._building_row(snapshot_id, org_id)
        path = self._upload_path(snapshot_id)
        n = 0
        with open(path + ".part", "wb", opener=private_opener) as fh:    # the user's files
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                n += len(chunk)
                if n > limit:
                    fh.close()
                    os.unlink(path + ".part")
                    raise E.PayloadTooLarge(f"Snapshot archive larger than {limit} bytes")
                fh.write(chunk)
        os.replace(path + ".part", path)
        return {"success": True, "scanned": True}

    def snapshot_build_finalize(self, snapshot_id: str, body: dict, *, org_id=None) -> dict:
        row = self._building_row(snapshot_id, org_id)
        body = body if isinstance(body, dict) else {}
        deps = body.get("dependencies") or []
        try:
            rt = runtimes.resolve(runtime_id=row["runtime_id"]) if row["runtime_id"] else runtimes.resolve("base")
            deps = runtimes.check_dependencies(rt, deps)
        except BaseException:
            self._abort_build(snapshot_id)
            raise
        archive = self._upload_path(snapshot_id)
        if not os.path.exists(archive):
            raise E.ValidationError(f"Snapshot {snapshot_id}: no archive was uploaded before finalize")
        from . import images
        volume = os.path.join(self.ctx.pool.root, "snapshots", snapshot_id)
        os.makedirs(os.path.dirname(volume), exist_ok=True)
        try:
            logs = os.path.join(self.ctx.state_dir, "logs")
            # the requested runtime's image (built on first use), or its cached dependency layer
            image = (images.ensure_deps(self.ctx.pool, rt["name"], deps, log_dir=logs) if deps
                     else images.ensure_image(self.ctx.pool, rt["name"], log_dir=logs))
            self.ctx.pool.snapshot(image, volume, read_only=False)
            root = os.path.join(volume, "root")
            with open(archive, "rb") as fh:
                from . import files
                files.fs_upload(root, "/home/agentuity", "tar.gz", fh, spool_dir=os.path.dirname(archive))
            placeholder = os.path.join(root, "home/agentuity/.placeholder")
            if os.path.exists(placeholder) and not body.get("files"):
                os.unlink(placeholder)
            self.ctx.pool.set_read_only(volume, True)
        except BaseException:
            self._abort_build(snapshot_id, volume)
            raise
        finally:
            try:
                os.unlink(archive)
            except FileNotFoundError:
                pass
        metadata = {str(k): str(v) for k, v in (body.get("metadata") or {}).items()}
        env = {str(k): str(v) for k, v in (body.get("env") or {}).items()}
        self.ctx.store.run("UPDATE snapshots SET status='ready', volume=?, size_bytes=?, file_count=?, files=?, "
                       "metadata=?, env=?, dependencies=? WHERE id=?", volume, int(body.get("sizeBytes") or 0),
                       int(body.get("fileCount") or 0), dumps(body.get("files") or []), dumps(metadata or None),
                       dumps(env or None), dumps(deps), snapshot_id)
        self.snapshots._claim_tag(row["org_id"], row["name"], row["tag"], snapshot_id)
        return render.snapshot_info(self.ctx.store.one("SELECT * FROM snapshots WHERE id=?", snapshot_id),
                                    self.ctx.org_names, with_files=True)

    def _abort_build(self, snapshot_id, volume=None):
        if volume:
            try:
                self.ctx.pool.delete_volume(volume)
            except Exception:
                pass
        self.ctx.store.run("DELETE FROM snapshots WHERE id=? AND status='building'", snapshot_id)

    def snapshot_build(self, build, *, org_id=None) -> dict:
        """The whole build for an in-process client (the local backend)."""
        init = self.snapshot_build_init(build.init_body(), org_id=org_id)
        if init.get("unchanged"):
            return init
        snap_id = init["snapshotId"]
        try:
            import tempfile
            with tempfile.TemporaryFile(dir=os.path.join(self.ctx.state_dir, "out")) as tmp:
                build.write_archive(tmp)
                tmp.seek(0)
                self.snapshot_build_upload(snap_id, tmp, org_id=org_id)
            info = self.snapshot_build_finalize(snap_id, build.finalize_body(), org_id=org_id)
        except BaseException:
            self._abort_build(snap_id)
            raise
        info["runtime"] = build.runtime
        return info

    def snapshot_env(self, snapshot_id) -> dict:
        row = self.ctx.store.one("SELECT env FROM snapshots WHERE id=?", snapshot_id)
        return loads(row["env"], {}) if row else {}

