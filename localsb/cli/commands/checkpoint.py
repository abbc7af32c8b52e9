"""`sandbox checkpoint` (ckpt): create, list, restore, delete disk checkpoints of a sandbox."""
from __future__ import annotations

from ..tree import arg, command, group, opt
from ._common import PREFIX, confirm, dash


def register(sub):
    group(sub, "checkpoint", aliases=["ckpt"], help="Manage sandbox checkpoints",
          examples=[(f"{PREFIX} checkpoint create sbx_abc123 my-checkpoint", "Create a checkpoint"),
                    (f"{PREFIX} checkpoint list sbx_abc123", "List checkpoints"),
                    (f"{PREFIX} checkpoint restore sbx_abc123 my-checkpoint", "Restore by name"),
                    (f"{PREFIX} checkpoint delete sbx_abc123 ckpt_def456 --confirm",
                     "Delete a checkpoint"),
                    "localsb cloud sandbox ckpt list sbx_abc123"],
          populate=_commands)


def _commands(children):
    p = command(children, "create", aliases=["new"], help="Save the sandbox filesystem as a checkpoint",
                handler=create, examples=[f"{PREFIX} checkpoint create sbx_abc123 my-checkpoint"])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    arg(p, "name", help="Checkpoint name (unique in the sandbox)")

    p = command(children, "list", aliases=["ls"], help="List the checkpoints of a sandbox", handler=list_,
                dry_run=True, examples=[f"{PREFIX} checkpoint list sbx_abc123"])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")

    p = command(children, "restore", help="Restore the sandbox filesystem from a checkpoint", handler=restore,
                examples=[f"{PREFIX} checkpoint restore sbx_abc123 ckpt_def456",
                          f"{PREFIX} checkpoint restore sbx_abc123 my-checkpoint"])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    arg(p, "checkpoint", metavar="ckpt-id-or-name", help="Checkpoint ID or name")

    p = command(children, "delete", aliases=["del", "rm", "remove"], help="Delete a checkpoint", handler=delete,
                examples=[f"{PREFIX} checkpoint delete sbx_abc123 ckpt_def456 --confirm"])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    arg(p, "checkpoint", metavar="ckpt-id-or-name", help="Checkpoint ID or name")
    opt(p, "--confirm", action="store_true", help="Skip the confirmation prompt")


def create(ctx):
    a, out = ctx.args, ctx.out
    c, ms = ctx.timed(ctx.backend.checkpoint_create, a.sandbox_id, a.name, org_id=ctx.org_id)
    if out.json_mode:
        out.json({"success": True, "sandboxId": a.sandbox_id, "checkpointId": c.get("id"), "name": c.get("name"),
                  "createdAt": c.get("createdAt"), "parent": c.get("parent"), "durationMs": ms})
        return 0
    out.success(f"created disk checkpoint {c.get('id')} in {ms}ms")
    out.vertical([("ID", c.get("id")), ("Name", c.get("name")), ("Created At", c.get("createdAt")),
                  ("Parent", dash(c.get("parent")))], pad="  ")
    return 0


def list_(ctx):
    from ..output import plural

    a, out = ctx.args, ctx.out
    items = ctx.backend.checkpoint_list(a.sandbox_id, org_id=ctx.org_id).get("checkpoints") or []
    if out.json_mode:
        out.json({"checkpoints": items, "total": len(items)})
        return 0
    if not items:
        out.info("No disk checkpoints found")
        return 0
    out.table(["ID", "Name", "Created At", "Parent"],
              [[c.get("id"), c.get("name"), dash(c.get("createdAt")), dash(c.get("parent"))] for c in items])
    out.info(f"Total: {len(items)} {plural(len(items), 'checkpoint', 'checkpoints')}")
    return 0


def restore(ctx):
    a, out = ctx.args, ctx.out
    _, ms = ctx.timed(ctx.backend.checkpoint_restore, a.sandbox_id, a.checkpoint, org_id=ctx.org_id)
    if out.json_mode:
        out.json({"success": True, "sandboxId": a.sandbox_id, "checkpointId": a.checkpoint, "durationMs": ms})
    else:
        out.success(f"restored sandbox {a.sandbox_id} to checkpoint {a.checkpoint} in {ms}ms")
    return 0


def delete(ctx):
    a, out = ctx.args, ctx.out
    if not confirm(ctx, f'Delete disk checkpoint "{a.checkpoint}" from sandbox "{a.sandbox_id}"?',
                   {"success": False, "sandboxId": a.sandbox_id, "checkpointId": a.checkpoint, "durationMs": 0,
                    "message": "Cancelled"}):
        return 0
    _, ms = ctx.timed(ctx.backend.checkpoint_delete, a.sandbox_id, a.checkpoint, org_id=ctx.org_id)
    if out.json_mode:
        out.json({"success": True, "sandboxId": a.sandbox_id, "checkpointId": a.checkpoint, "durationMs": ms})
    else:
        out.success(f"deleted disk checkpoint {a.checkpoint} from sandbox {a.sandbox_id} in {ms}ms")
    return 0
