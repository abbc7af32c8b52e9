"""Disk checkpoints: freeze -> read-only btrfs snapshot -> thaw; restore swaps the volume back.

Checkpoints here survive pause/resume (hosted ones do not: docs/divergences.md).
"""
from __future__ import annotations

import os
import re
import sqlite3
import time

from localsb.api import errors as E
from localsb.api.models import new_id
from localsb.api.status import SANDBOX_PAUSED

from . import render
from .store import dumps, loads
from .common import call, event, live_row, sandbox_row

CKPT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Checkpoints:
    def __init__(self, ctx):
        self.ctx = ctx

    def _ckpt_row(self, sandbox_id, ref):
        row = self.ctx.store.one("SELECT * FROM checkpoints WHERE sandbox_id=? AND (id=? OR name=?) "
                             "ORDER BY id=? DESC LIMIT 1", sandbox_id, ref, ref, ref)
        if row is None:
            raise E.CheckpointNotFound(sandbox_id, ref)
        return row

    def checkpoint_create(self, sandbox_id, name, *, org_id=None) -> dict:
        if not isinstance(name, str) or not CKPT_NAME_RE.match(name):
            raise E.ValidationError(
                f"Invalid checkpoint name {name!r}: use letters, digits, '.', '_' and '-' (at most 128), "
                "starting with a letter or digit")
        row = live_row(self.ctx, sandbox_id, org_id)
        ckpt_id = new_id("checkpoint")
        volume = os.path.join(self.ctx.pool.root, "checkpoints", ckpt_id)
        os.makedirs(os.path.dirname(volume), exist_ok=True)
        spec = loads(row["spec"], {})
        parent = spec.get("last_checkpoint") or ""
        t = time.time()
        try:
            self.ctx.store.insert("checkpoints", {"id": ckpt_id, "sandbox_id": sandbox_id, "name": name,
                                              "parent": parent, "volume": volume, "created_at": t})
        except sqlite3.IntegrityError:
            raise E.AlreadyExists(f"Checkpoint '{name}' already exists for sandbox {sandbox_id}") from None
        try:
            self._frozen_snapshot(row, volume)
        except BaseException:
            self.ctx.store.run("DELETE FROM checkpoints WHERE id=?", ckpt_id)
            try:
                self.ctx.pool.delete_volume(volume)
            except Exception:
                pass
            raise
        self._set_spec(sandbox_id, last_checkpoint=name)
        event(self.ctx, sandbox_id, row["org_id"], "checkpoint", {"action": "create", "checkpointId": ckpt_id,
                                                             "name": name, "parent": parent})
        return render.checkpoint_info(self.ctx.store.one("SELECT * FROM checkpoints WHERE id=?", ckpt_id))

    def _frozen_snapshot(self, row, dest_volume):
        """Freeze the sandbox (unless paused already), take a read-only snapshot, thaw."""
        from localsb.linux.cgroups import SandboxCgroup
        cg = SandboxCgroup.from_dict(loads(row["cgroup"]))
        was_frozen = row["status"] in SANDBOX_PAUSED
        if not was_frozen:
            self.ctx.cgroups.freeze(cg)
        try:
            self.ctx.pool.snapshot(row["volume"], dest_volume, read_only=True)
        finally:
            if not was_frozen:
                self.ctx.cgroups.thaw(cg)

    def _set_spec(self, sandbox_id, **changes):
        with self.ctx.store.tx() as c:
            spec = loads(c.execute("SELECT spec FROM sandboxes WHERE id=?", (sandbox_id,)).fetchone()[0], {})
            spec.update(changes)
            c.execute("UPDATE sandboxes SET spec=? WHERE id=?", (dumps(spec), sandbox_id))

    def checkpoint_list(self, sandbox_id, *, org_id=None) -> dict:
        sandbox_row(self.ctx, sandbox_id, org_id)
        rows = self.ctx.store.all("SELECT * FROM checkpoints WHERE sandbox_id=? ORDER BY created_at, rowid", sandbox_id)
        return {"checkpoints": [render.checkpoint_info(r) for r in rows]}

    def checkpoint_restore(self, sandbox_id, ref, *, org_id=None) -> dict:
        row = live_row(self.ctx, sandbox_id, org_id)
        ck = self._ckpt_row(sandbox_id, ref)
        call(self.ctx, sandbox_id, {"op": "restore", "volume": ck["volume"]}, timeout=120)
        self._set_spec(sandbox_id, last_checkpoint=ck["name"])
        event(self.ctx, sandbox_id, row["org_id"], "checkpoint", {"action": "restore", "checkpointId": ck["id"],
                                                             "name": ck["name"]})
        return {"sandboxId": sandbox_id, "checkpointId": ck["id"]}

    def checkpoint_delete(self, sandbox_id, ref, *, org_id=None) -> None:
        row = sandbox_row(self.ctx, sandbox_id, org_id)
        ck = self._ckpt_row(sandbox_id, ref)
        if self.ctx.store.run("DELETE FROM checkpoints WHERE id=?", ck["id"]) == 1:
            self.ctx.pool.delete_volume(ck["volume"])
        event(self.ctx, sandbox_id, row["org_id"], "checkpoint", {"action": "delete", "checkpointId": ck["id"],
                                                             "name": ck["name"]})
