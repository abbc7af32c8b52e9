"""`sandbox snapshot` (snap, snapshots): create, list, get, tag, delete, build, generate."""
from __future__ import annotations

from ..tree import arg, command, group, int_range, opt
from ._common import PREFIX, confirm, dash, omit_none


def register(sub):
    group(sub, "snapshot", aliases=["snap", "snapshots"], help="Manage sandbox snapshots",
          examples=[f"{PREFIX} snapshot create sbx_abc123 --tag python-ml-v2",
                    f"{PREFIX} snapshot list --sandbox sbx_abc123",
                    f"{PREFIX} snapshot tag snp_xyz789 latest",
                    f"{PREFIX} snapshot build . --env API_KEY=secret",
                    f"{PREFIX} snapshot generate > agentuity-snapshot.yaml"],
          populate=_commands)


def _commands(children):
    p = command(children, "create", aliases=["new"], help="Create a snapshot of a sandbox", handler=create,
                examples=[(f"{PREFIX} snapshot create sbx_abc123", "Create snapshot"),
                          (f"{PREFIX} snapshot create sbx_abc123 --tag python-ml-v2", "Create with tag"),
                          (f"{PREFIX} snapshot create sbx_abc123 --public", "Create public snapshot")])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    opt(p, "--name", metavar="NAME", help="Display name for the snapshot (letters, numbers, _ and -)")
    opt(p, "--description", metavar="TEXT", help="Snapshot description")
    opt(p, "--tag", metavar="TAG", help="Snapshot tag", show_default="latest")
    opt(p, "--public", action="store_true", help="Make the snapshot publicly accessible")

    p = command(children, "list", aliases=["ls"], help="List snapshots", handler=list_, dry_run=True,
                examples=[f"{PREFIX} snapshot list", f"{PREFIX} snapshot list --sandbox sbx_abc123",
                          f"{PREFIX} snapshot list --sort=size --direction=desc"])
    opt(p, "--sandbox", metavar="ID", help="Filter by source sandbox")
    opt(p, "--limit", type=int_range(1, 100, "limit"), default=50, help="Max results")
    opt(p, "--offset", type=int_range(0, None, "offset"), default=0, help="Pagination offset")
    opt(p, "--sort", choices=("name", "created", "size", "files"), default="created", help="Sort field")
    opt(p, "--direction", choices=("asc", "desc"), default="desc", help="Sort direction")

    p = command(children, "get", aliases=["info", "show"], help="Get snapshot details", handler=get, dry_run=True,
                examples=[f"{PREFIX} snapshot get snp_xyz789"])
    arg(p, "snapshot_id", metavar="snapshot-id", help="Snapshot ID")

    p = command(children, "tag", help="Set or remove the tag of a snapshot", handler=tag,
                usage="%(prog)s <snapshot-id> [tag] [--clear]",
                examples=[(f"{PREFIX} snapshot tag snp_xyz789 latest", "Set tag"),
                          (f"{PREFIX} snapshot tag snp_xyz789 v2.0", "Update tag"),
                          (f"{PREFIX} snapshot tag snp_xyz789 --clear", "Remove tag")])
    arg(p, "snapshot_id", metavar="snapshot-id", help="Snapshot ID")
    arg(p, "tag", nargs="?", help="Tag name")
    opt(p, "--clear", action="store_true", help="Remove the tag")

    p = command(children, "delete", aliases=["del", "rm", "remove"], help="Delete a snapshot", handler=delete,
                examples=[f"{PREFIX} snapshot delete snp_xyz789",
                          f"{PREFIX} snapshot delete snp_xyz789 --confirm"])
    arg(p, "snapshot_id", metavar="snapshot-id", help="Snapshot ID")
    opt(p, "--confirm", action="store_true", help="Skip the confirmation prompt")

    p = command(children, "build", help="Build a snapshot from a declarative build file", handler=build,
                dry_run=True,
                examples=[(f"{PREFIX} snapshot build .", "Build from current directory"),
                          (f"{PREFIX} snapshot build ./project --file custom-build.yaml --tag production",
                           "Custom file and tag"),
                          (f"{PREFIX} snapshot build . --env API_KEY=secret --env VERSION=1.0.0",
                           "Environment substitution"),
                          (f"{PREFIX} snapshot build . --force", "Force rebuild")])
    arg(p, "directory", help="Build directory (globs in the build file are relative to it)")
    opt(p, "--file", metavar="FILE",
        help="Build file, relative to the working directory "
             "(default: agentuity-snapshot.yaml, .yml or .json in the directory)")
    opt(p, "--tag", metavar="TAG", help="Snapshot tag", show_default="latest")
    opt(p, "--name", metavar="NAME", help="Snapshot name (overrides the build file)")
    opt(p, "--description", metavar="TEXT", help="Snapshot description (overrides the build file)")
    opt(p, "--message", metavar="TEXT", help="Build message recorded with the snapshot")
    opt(p, "--env", metavar="KEY=VALUE", action="append", help="Variable for ${VAR} substitution in env (repeatable)")
    opt(p, "--metadata", metavar="KEY=VALUE", action="append",
        help="Variable for ${VAR} substitution in metadata (repeatable)")
    opt(p, "--force", action="store_true", help="Force rebuild even if the content is unchanged")
    opt(p, "--public", action="store_true", help="Make the snapshot public")
    opt(p, "--confirm", action="store_true", help="Confirm publishing a public snapshot")

    p = command(children, "generate", aliases=["gen", "init"], help="Print a template snapshot build file",
                handler=generate, dry_run=True,
                examples=[(f"{PREFIX} snapshot generate > agentuity-snapshot.yaml", "YAML template"),
                          (f"{PREFIX} snapshot generate --format json > agentuity-snapshot.json", "JSON template")])
    opt(p, "--format", choices=("yaml", "json"), default="yaml", help="Output format")


def create(ctx):
    from localsb.api.models import validate_snapshot_name, validate_tag

    from ..output import format_bytes

    a, out = ctx.args, ctx.out
    if a.name is not None:
        validate_snapshot_name(a.name)
    if a.tag is not None:
        validate_tag(a.tag)
    s = ctx.backend.snapshot_create(a.sandbox_id, name=a.name, description=a.description, tag=a.tag,
                                    public=a.public, org_id=ctx.org_id)
    if out.json_mode:
        out.json(omit_none({k: s.get(k) for k in ("snapshotId", "name", "description", "tag", "sizeBytes",
                                                   "fileCount", "createdAt")}))
        return 0
    out.success(f"Created snapshot {s['snapshotId']}")
    out.line()
    out.vertical([("Name", s.get("name")), ("Description", dash(s.get("description"))),
                  ("Tag", s.get("tag") or "latest"), ("Size", format_bytes(s.get("sizeBytes"))),
                  ("Files", s.get("fileCount")), ("Visibility", "public" if s.get("public") else "private"),
                  ("Created", s.get("createdAt"))], pad="  ")
    return 0


def list_(ctx):
    from ..output import format_bytes, plural

    a, out = ctx.args, ctx.out
    data = ctx.backend.snapshot_list(sandbox_id=a.sandbox, limit=a.limit, offset=a.offset, sort=a.sort,
                                     direction=a.direction, org_id=ctx.org_id)
    items = data.get("snapshots") or []
    if out.json_mode:
        out.json(data)
        return 0
    if not items:
        out.info("No snapshots found")
        return 0
    out.table(["ID", "Name", "Tag", "Size", "Files", "Created At"],
              [[s.get("snapshotId"), dash(s.get("name")), dash(s.get("tag")),
                dash(None if s.get("sizeBytes") is None else format_bytes(s["sizeBytes"])),
                dash(s.get("fileCount")), dash(s.get("createdAt"))] for s in items],
              align=["left", "left", "left", "right", "right", "left"])
    total = data.get("total", len(items))
    out.info(f"Total: {total} {plural(total, 'snapshot', 'snapshots')}")
    return 0


def get(ctx):
    from ..output import file_tree, format_bytes

    a, out = ctx.args, ctx.out
    s = ctx.backend.snapshot_get(a.snapshot_id, org_id=ctx.org_id)
    boxes = ctx.backend.sandbox_list(snapshot_id=s.get("snapshotId", a.snapshot_id), org_id=ctx.org_id,
                                     limit=100).get("sandboxes") or []
    attached = sorted(({"sandboxId": b.get("sandboxId") or b.get("id"), "status": b.get("status"),
                        "createdAt": b.get("createdAt"), "executions": b.get("executions")}
                       for b in boxes if b.get("status") in ("idle", "running")),
                      key=lambda b: b["sandboxId"])
    if out.json_mode:
        out.json(dict(s, sandboxes=[omit_none(b) for b in attached]))
        return 0
    rows = [("Snapshot", out.bold(s["snapshotId"])), ("Name", s.get("name"))]
    if s.get("tag"):
        rows.append(("Tag", s["tag"]))
    rows += [("Size", format_bytes(s.get("sizeBytes"))), ("Files", s.get("fileCount"))]
    if s.get("public"):
        rows += [("Public", "Yes"), ("Full Name", dash(s.get("fullName"))),
                 ("Publisher", dash(s.get("orgName") or (s.get("org") or {}).get("name")))]
    rows.append(("Created", s.get("createdAt")))
    if s.get("parentSnapshotId"):
        rows.append(("Parent", s["parentSnapshotId"]))
    out.vertical(rows, pad="  ")
    if s.get("userMetadata"):
        out.line()
        out.info("Metadata:")
        for k, v in s["userMetadata"].items():
            out.bullet(f"{k}={v}", indent="  ")
    if s.get("files"):
        out.line()
        out.info("Files:")
        for line in file_tree([(f.get("path", ""), f.get("size")) for f in s["files"]]):
            out.line(line)
    if attached:
        out.line()
        out.info(f"Attached Sandboxes ({len(attached)}):")
        for i, b in enumerate(attached):
            out.line(f"  {'└── ' if i == len(attached) - 1 else '├── '}{b['sandboxId']} ({b['status']})")
    return 0


def tag(ctx):
    from localsb.api.errors import ValidationError
    from localsb.api.models import validate_tag

    a, out = ctx.args, ctx.out
    if a.clear:
        value = None
    elif a.tag:
        value = validate_tag(a.tag, for_tag_command=True)
    else:
        raise ValidationError("Either provide a tag name or use --clear to remove the tag")
    s = ctx.backend.snapshot_tag(a.snapshot_id, value, org_id=ctx.org_id) or {}
    sid = s.get("snapshotId", a.snapshot_id)
    if out.json_mode:
        # The official CLI returns {snapshotId, tag: <tag or undefined>}: a cleared tag is no key.
        out.json(omit_none({"snapshotId": sid, "tag": s.get("tag", value)}))
    elif value is None:
        out.success(f"removed tag from snapshot {sid}")
    else:
        out.success(f"tagged snapshot {sid} as {value}")
    return 0


def delete(ctx):
    sid = ctx.args.snapshot_id
    if not confirm(ctx, f'Delete snapshot "{sid}"?', {"success": False, "snapshotId": sid, "message": "Cancelled"}):
        return 0
    ctx.backend.snapshot_delete(sid, org_id=ctx.org_id)
    if ctx.out.json_mode:
        ctx.out.json({"success": True, "snapshotId": sid})
    else:
        ctx.out.success(f"deleted snapshot {sid}")
    return 0


def mask_secret(value: str) -> str:
    """tui.maskSecret: '***' up to 8 characters, URL credentials masked partially, else the
    first and last 6 characters around '...'."""
    from urllib.parse import urlsplit
    if not value:
        return ""
    if len(value) <= 8:
        return "***"
    try:
        u = urlsplit(value)
        user, password = u.username, u.password
    except ValueError:
        u, user, password = None, None, None
    if u is not None and u.scheme and u.netloc and (user or password):
        auth = ""
        if user:
            auth = "***" if len(user) <= 4 else f"{user[:2]}***{user[-2:]}"
        if password:
            auth += ":***" if len(password) <= 6 else f":{password[:3]}***{password[-3:]}"
        elif user:
            auth += ":***"
        host = u.netloc.rsplit("@", 1)[1]
        query = f"?{u.query}" if u.query else ""
        frag = f"#{u.fragment}" if u.fragment else ""
        return f"{u.scheme}://{auth}@{host}{u.path or '/'}{query}{frag}"
    return f"{value[:6]}...{value[-6:]}"


def _build_table(out, pairs) -> None:
    """tui.table(..., {layout: 'vertical', padStart: '  '}): the rows, then an empty line."""
    out.vertical(pairs, pad="  ")
    out.line()


def _build_sections(out, b, files, *, metadata: bool) -> None:
    """The sections after the build table, as the official CLI prints them: each an empty line
    (stdout), a bold heading (stderr), then its '  • item' lines or the file tree (stdout)."""
    from ..output import file_tree
    sections = [("Dependencies", b.dependencies), ("Packages (npm/bun)", b.packages),
                ("Environment", [f"{k}={mask_secret(v)}" for k, v in b.env.items()])]
    if metadata:
        sections.append(("Metadata", [f"{k}={v}" for k, v in (b.metadata or {}).items()]))
    for title, items in sections:
        if items:
            out.line()
            out.err_line(out.bold(title))
            for item in items:
                out.line(f"  {out.muted('•')} {item}")
    if files:
        out.line()
        out.err_line(out.bold("Files"))
        for line in file_tree(files, dir_suffix=""):
            out.line(line)


def build(ctx):
    from localsb.api.errors import LocalsbError
    from localsb.api.models import now_iso

    from ..output import format_bytes
    from ..snapshot_build import load_build

    a, out = ctx.args, ctx.out
    b = load_build(a.directory, a.file, tag=a.tag, name=a.name, description=a.description, message=a.message,
                   env_pairs=a.env, metadata_pairs=a.metadata, force=a.force, public=a.public)
    if a.dry_run:
        if out.json_mode:
            out.json(omit_none({"snapshotId": "", "name": b.name, "tag": b.tag, "runtime": b.runtime,
                                "sizeBytes": b.size_bytes, "fileCount": b.file_count, "createdAt": now_iso(),
                                "userMetadata": b.metadata or None}))
            return 0
        out.info("Dry Run - No upload will be performed")
        out.line()
        _build_table(out, [("Name", b.name or ""), ("Description", dash(b.description)),
                           ("Runtime", b.runtime), ("Tag", b.tag),
                           ("Access", "public" if b.public else "private"),
                           ("Size", format_bytes(b.size_bytes)), ("Files", b.file_count)])
        _build_sections(out, b, [(f.path, f.size) for f in b.files], metadata=False)
        return 0
    if b.public and not a.confirm:
        raise LocalsbError("Publishing a public snapshot needs --confirm: anyone can read a public "
                           "snapshot, and its files are not encrypted")
    r = ctx.backend.snapshot_build(b, org_id=ctx.org_id)
    if r.get("unchanged"):
        if out.json_mode:
            out.json(omit_none({"snapshotId": r.get("existingId"), "name": r.get("existingName"),
                                "tag": r.get("existingTag"), "runtime": b.runtime, "sizeBytes": b.size_bytes,
                                "fileCount": b.file_count, "createdAt": now_iso(), "unchanged": True,
                                "userMetadata": b.metadata or None}))
            return 0
        out.success(f"Snapshot unchanged {r.get('existingId')}")
        out.line()
        _build_table(out, [("Name", dash(b.name)), ("Tag", b.tag)])
        return 0
    if out.json_mode:
        out.json(omit_none({"snapshotId": r.get("snapshotId"), "name": r.get("name"), "tag": r.get("tag"),
                            "runtime": b.runtime, "sizeBytes": r.get("sizeBytes", b.size_bytes),
                            "fileCount": r.get("fileCount", b.file_count), "createdAt": r.get("createdAt"),
                            "userMetadata": r.get("userMetadata") or b.metadata or None}))
        return 0
    out.success(f"Created snapshot {r.get('snapshotId')}")
    out.line()
    _build_table(out, [("Name", dash(r.get("name"))),
                       ("Description", dash(r.get("description") or b.description)),
                       ("Runtime", b.runtime), ("Tag", dash(r.get("tag") or b.tag)),
                       ("Size", format_bytes(r.get("sizeBytes", b.size_bytes))),
                       ("Files", r.get("fileCount", b.file_count)), ("Created", dash(r.get("createdAt")))])
    # The official CLI draws the tree from the files the service reports, else none.
    files = r.get("files")
    tree = ([(f.get("path", ""), f.get("size")) for f in files] if files is not None
            else [(f.path, f.size) for f in b.files])
    _build_sections(out, b, tree, metadata=True)
    return 0


def generate(ctx):
    from ..output import to_json
    from ..snapshot_template import JSON_TEMPLATE, YAML_TEMPLATE

    content = to_json(JSON_TEMPLATE) if ctx.args.format == "json" else YAML_TEMPLATE
    if ctx.out.json_mode:
        ctx.out.json({"format": ctx.args.format, "content": content})
    else:
        # console.log of the template: one more newline after it.
        ctx.out.line(content)
    return 0
