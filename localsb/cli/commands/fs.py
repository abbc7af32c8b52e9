"""`sandbox fs` (files, file): ls, cp, mkdir, rm, rmdir, download, upload."""
from __future__ import annotations

from ..tree import arg, command, group, opt
from ._common import PREFIX, omit_none

# Directories every sandbox has; fs cp neither checks nor reports them (as the official CLI).
_ALWAYS_THERE = ("/", "/home", "/home/agentuity", "")


def register(sub):
    group(sub, "fs", aliases=["files", "file"], help="Work with files in a sandbox",
          examples=[f"{PREFIX} fs cp ./local-file.txt sbx_abc123:/workspace/file.txt",
                    f"{PREFIX} fs ls sbx_abc123 /workspace/src",
                    f"{PREFIX} fs mkdir sbx_abc123 /workspace/data/processed -p",
                    f"{PREFIX} fs download sbx_abc123 ./backup.tar.gz"],
          populate=_commands)


def _commands(children):
    p = command(children, "ls", aliases=["list", "dir"], help="List files in a sandbox", handler=ls, dry_run=True,
                examples=[(f"{PREFIX} fs ls sbx_abc123", "List the workspace"),
                          (f"{PREFIX} fs ls sbx_abc123 /workspace/src", "List a directory"),
                          (f"{PREFIX} fs ls sbx_abc123 -l", "Long format with details")])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    arg(p, "path", nargs="?", default=".", help="Directory to list (default: .)")
    opt(p, "-l", "--long", action="store_true", help="Show permissions and timestamps")

    p = command(children, "cp", aliases=["copy"], help="Copy files to or from a sandbox", handler=cp,
                usage="%(prog)s <source> <destination> [options]",
                examples=[(f"{PREFIX} fs cp ./local-file.txt sbx_abc123:/workspace/file.txt", "Upload a file"),
                          (f"{PREFIX} fs cp sbx_abc123:/workspace/output.json ./output.json", "Download a file"),
                          (f"{PREFIX} fs cp -r ./src sbx_abc123:/workspace/src", "Upload a directory"),
                          (f"{PREFIX} fs cp --strict ./file.txt sbx_abc123:/home/agentuity/must-exist/file.txt",
                           "Fail if the target directory does not exist")])
    arg(p, "source", help="Local path, or sbx_ID:PATH")
    arg(p, "destination", help="Local path, or sbx_ID:PATH")
    opt(p, "-r", "--recursive", action="store_true", help="Copy directories recursively")
    opt(p, "--strict", action="store_true",
        help="Fail if the target parent directory does not exist (no auto-creation)")
    opt(p, "--timeout", metavar="DURATION",
        help="Operation timeout (e.g., 5m, 1h; 1s to 720h); checked, not enforced by localsb")

    p = command(children, "mkdir", help="Create a directory in a sandbox", handler=mkdir,
                examples=[f"{PREFIX} fs mkdir sbx_abc123 /workspace/output",
                          f"{PREFIX} fs mkdir sbx_abc123 /workspace/data/processed -p"])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    arg(p, "path", help="Directory to create")
    opt(p, "-p", "--parents", action="store_true", help="Create parent directories as needed")

    p = command(children, "rm", aliases=["del", "remove"], help="Remove a file from a sandbox", handler=rm,
                examples=[f"{PREFIX} fs rm sbx_abc123 /workspace/temp.txt"])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    arg(p, "path", help="File to remove")

    p = command(children, "rmdir", help="Remove a directory from a sandbox", handler=rmdir,
                examples=[(f"{PREFIX} fs rmdir sbx_abc123 /workspace/old", "Remove an empty directory"),
                          (f"{PREFIX} fs rmdir sbx_abc123 /workspace/cache -r", "Remove with contents")])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    arg(p, "path", help="Directory to remove")
    opt(p, "-r", "--recursive", action="store_true", help="Remove the directory and all its contents")

    p = command(children, "download", aliases=["dl"], help="Download sandbox files as an archive",
                handler=download,
                examples=[(f"{PREFIX} fs download sbx_abc123 ./backup.tar.gz", "Download everything"),
                          (f"{PREFIX} fs download sbx_abc123 ./backup.zip --format zip", "As zip"),
                          (f"{PREFIX} fs download sbx_abc123 ./src.tar.gz --path /workspace/src",
                           "A specific directory")])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    arg(p, "output", help="Archive file to write")
    opt(p, "--path", default=".", help="Directory to download")
    opt(p, "--format", choices=("tar.gz", "zip"),
        help="Archive format (default: zip for a .zip output, else tar.gz)")

    p = command(children, "upload", aliases=["ul"], help="Upload and extract an archive into a sandbox",
                handler=upload,
                examples=[(f"{PREFIX} fs upload sbx_abc123 ./project.tar.gz", "Extract into the workspace"),
                          (f"{PREFIX} fs upload sbx_abc123 ./deps.zip --path /workspace/node_modules",
                           "Extract into a directory")])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    arg(p, "archive", help="Archive file (tar.gz or zip)")
    opt(p, "--path", default=".", help="Destination directory")
    opt(p, "--format", choices=("tar.gz", "zip"), help="Archive format (default: from the file name)")


def _fmt_for(name: str, given: str | None) -> str:
    return given or ("zip" if name.lower().endswith(".zip") else "tar.gz")


def _mod_time(iso: str | None) -> str:
    """`Mon DD HH:MM` for this year, `Mon DD  YYYY` otherwise (ls -l style, local time)."""
    import time

    from localsb.api.models import parse_iso
    if not iso:
        return "-"
    try:
        t = time.localtime(parse_iso(iso))
    except Exception:  # noqa: BLE001 - show what the server sent
        return iso
    mon = time.strftime("%b", t)
    if t.tm_year == time.localtime().tm_year:
        return f"{mon} {t.tm_mday:>2} {t.tm_hour:02d}:{t.tm_min:02d}"
    return f"{mon} {t.tm_mday:>2}  {t.tm_year}"


def ls(ctx):
    from ..output import format_size_1

    a, out = ctx.args, ctx.out
    data = ctx.backend.fs_list(a.sandbox_id, a.path, org_id=ctx.org_id)
    files = data.get("files") or []
    if out.json_mode:
        out.json({"files": files, "total": len(files)})
        return 0
    if not files:
        out.line("Directory is empty")
        return 0
    for f in files:
        kind = "d" if f.get("isDir") else "-"
        size = "-" if f.get("isDir") else format_size_1(f.get("size"))
        if a.long:
            out.line(f"{kind}{str(f.get('mode', '')):<5} {size:>10}  {_mod_time(f.get('modTime'))}  {f.get('path')}")
        else:
            out.line(f"{kind} {size:>10}  {f.get('path')}")
    out.line()
    out.line(f"Total: {len(files)} items")
    return 0


def mkdir(ctx):
    a = ctx.args
    ctx.backend.fs_mkdir(a.sandbox_id, a.path, recursive=a.parents, org_id=ctx.org_id)
    if ctx.out.json_mode:
        ctx.out.json({"success": True, "path": a.path})
    else:
        ctx.out.success(f"Created directory: {a.path}")
    return 0


def _removed(ctx, found, what: str):
    a, out = ctx.args, ctx.out
    found = True if found is None else bool(found)
    if out.json_mode:
        out.json({"success": True, "path": a.path, "found": found})
    elif found:
        out.success(f"Removed {what}: {a.path}")
    else:
        out.warning(f"{what.capitalize()} not found: {a.path} (already removed)")
    return 0


def rm(ctx):
    a = ctx.args
    return _removed(ctx, ctx.backend.fs_rm(a.sandbox_id, a.path, org_id=ctx.org_id), "file")


def rmdir(ctx):
    a = ctx.args
    return _removed(ctx, ctx.backend.fs_rmdir(a.sandbox_id, a.path, recursive=a.recursive, org_id=ctx.org_id),
                    "directory")


def download(ctx):
    import os

    from ..output import format_size_1

    a, out = ctx.args, ctx.out
    parent = os.path.dirname(os.path.abspath(a.output))
    os.makedirs(parent, exist_ok=True)
    fmt = _fmt_for(a.output, a.format)
    try:
        with open(a.output, "wb") as fh:
            n = ctx.backend.fs_download(a.sandbox_id, a.path, fmt, fh, org_id=ctx.org_id)
    except BaseException:
        # Leave no half-written archive behind.
        _unlink(a.output)
        raise
    if n is None:
        n = os.path.getsize(a.output)
    if out.json_mode:
        out.json({"success": True, "output": a.output, "bytes": n})
    else:
        out.success(f"Downloaded {format_size_1(n, 'bytes')} to {a.output}")
    return 0


def upload(ctx):
    import os

    from ..errors import LocalFileError
    from ..output import format_size_1

    a, out = ctx.args, ctx.out
    if not os.path.isfile(a.archive):
        raise LocalFileError(f"{a.archive} is not a file")
    size = os.path.getsize(a.archive)
    with open(a.archive, "rb") as fh:
        ctx.backend.fs_upload(a.sandbox_id, a.path, _fmt_for(a.archive, a.format), fh, org_id=ctx.org_id)
    if out.json_mode:
        out.json({"success": True, "bytes": size})
    else:
        out.success(f"Uploaded and extracted {format_size_1(size, 'bytes')} to sandbox")
    return 0


def _unlink(path):
    import os
    try:
        os.unlink(path)
    except OSError:
        pass


# fs cp -----------------------------------------------------------------------------------------


def parse_remote(path: str):
    """'sbx_abc:/p' -> ('sbx_abc', '/p'); a local path -> None."""
    import re
    m = re.match(r"^(sbx_[A-Za-z0-9_-]+):(.*)$", path)
    return (m.group(1), m.group(2)) if m else None


def implied_dirs(targets) -> list[str]:
    """Parent directories that a write of ``targets`` creates, minus those always present."""
    import posixpath
    dirs = set()
    for t in targets:
        d = posixpath.dirname(t)
        while d not in _ALWAYS_THERE and d not in dirs:
            dirs.add(d)
            parent = posixpath.dirname(d)
            if parent == d:
                break
            d = parent
    return sorted(dirs)


def _check_parent(ctx, sandbox_id: str, target: str) -> None:
    """--strict: the target's parent must already exist (checked with `test -d` in the sandbox)."""
    import posixpath

    from localsb.api.errors import FileNotFoundInSandbox
    parent = posixpath.dirname(target)
    if parent in _ALWAYS_THERE:
        return
    r = ctx.backend.sandbox_execute(sandbox_id, ["test", "-d", parent], stdout=None, stderr=None,
                                    org_id=ctx.org_id)
    if r.get("exitCode") != 0:
        raise FileNotFoundInSandbox(
            f"Target directory does not exist: {parent}. Create it first: "
            f"{PREFIX} fs mkdir {sandbox_id} {parent} -p")


def cp(ctx):
    import os

    from localsb.api.errors import ValidationError
    from localsb.api.limits import check_timeout

    from ..errors import LocalFileError

    a = ctx.args
    if a.timeout is not None:
        check_timeout(a.timeout, "timeout")
    src, dst = parse_remote(a.source), parse_remote(a.destination)
    if src and dst:
        raise ValidationError("Cannot copy between two sandboxes. Use a local path as source or destination.")
    if not src and not dst:
        raise ValidationError("At least one path must include a sandbox ID (e.g., sbx_abc123:/path/to/file)")
    if dst:
        if not os.path.exists(a.source):
            raise LocalFileError(f"Local path not found: {a.source}")
        if os.path.isdir(a.source):
            result = _upload_dir(ctx, a.source, *dst)
        else:
            result = _upload_file(ctx, a.source, *dst)
    else:
        result = (_download_dir if a.recursive else _download_file)(ctx, *src, a.destination)
    if ctx.out.json_mode:
        ctx.out.json(omit_none(result))
    return 0


def _upload_file(ctx, local: str, sandbox_id: str, remote: str) -> dict:
    import os

    target = remote + os.path.basename(local) if (not remote or remote.endswith("/")) else remote
    if ctx.args.strict:
        _check_parent(ctx, sandbox_id, target)
    with open(local, "rb") as fh:
        size = ctx.backend.fs_write_stream(sandbox_id, target, fh, org_id=ctx.org_id)
    if not ctx.out.json_mode:
        ctx.out.success(f"Copied {local} → {sandbox_id}:{target} ({size} bytes)")
    return {"source": local, "destination": f"{sandbox_id}:{target}", "bytesTransferred": size,
            "filesTransferred": 1, "directoriesCreated": implied_dirs([target]) or None}


def _upload_dir(ctx, local: str, sandbox_id: str, remote: str) -> dict:
    import io
    import os
    import posixpath
    import tarfile

    from localsb.api.errors import ValidationError

    if not ctx.args.recursive:
        raise ValidationError(f"{local} is a directory. Use -r/--recursive to copy directories.")
    root = os.path.abspath(local)
    base = remote + os.path.basename(root) if (not remote or remote.endswith("/")) else remote
    if ctx.args.strict:
        _check_parent(ctx, sandbox_id, base.rstrip("/") or "/")
    members = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if os.path.isfile(full):
                members.append((full, os.path.relpath(full, root).replace(os.sep, "/")))
    if not members:
        raise ValidationError(f"Directory is empty: {local}")
    buf = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for full, rel in members:
            tar.add(full, arcname=rel, recursive=False)
            total += os.path.getsize(full)
    buf.seek(0)
    ctx.backend.fs_upload(sandbox_id, base, "tar.gz", buf, org_id=ctx.org_id)
    if not ctx.out.json_mode:
        ctx.out.success(f"Copied {root} → {sandbox_id}:{base} ({len(members)} files, {total} bytes)")
    targets = [posixpath.join(base, rel) for _, rel in members]
    # The official CLI reports the local side as an absolute path (human and --json alike).
    return {"source": root, "destination": f"{sandbox_id}:{base}", "bytesTransferred": total,
            "filesTransferred": len(members), "directoriesCreated": implied_dirs(targets) or None}


def _download_file(ctx, sandbox_id: str, remote: str, local: str) -> dict:
    import os
    import posixpath

    if local.endswith(("/", os.sep)) or local == "." or os.path.isdir(local):
        local = os.path.join(local, posixpath.basename(remote.rstrip("/")))
    target = os.path.abspath(local)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        with open(target, "wb") as fh:
            n = ctx.backend.fs_read(sandbox_id, remote, fh, org_id=ctx.org_id)
    except BaseException:
        _unlink(target)
        raise
    if n is None:
        n = os.path.getsize(target)
    if not ctx.out.json_mode:
        ctx.out.success(f"Copied {sandbox_id}:{remote} → {target} ({n} bytes)")
    return {"source": f"{sandbox_id}:{remote}", "destination": target, "bytesTransferred": n,
            "filesTransferred": 1}


def _download_dir(ctx, sandbox_id: str, remote: str, local: str) -> dict:
    import os
    import tempfile

    from localsb.api.errors import LocalsbError, ValidationError
    from localsb.engine.files import fs_extract_local

    from ..errors import LocalFileError

    target = os.path.abspath(local)
    if os.path.lexists(target) and not os.path.isdir(target):
        raise LocalFileError(f"Not a directory: {target}")
    with tempfile.TemporaryFile() as tmp:
        # The whole archive first: a download that fails half-way touches nothing local.
        ctx.backend.fs_download(sandbox_id, remote or ".", "tar.gz", tmp, org_id=ctx.org_id)
        tmp.seek(0)
        # The upload extractor, on this machine: nothing leaves the target, symlinks arrive as
        # links (never followed), a new target appears complete or not at all.
        try:
            res = fs_extract_local(tmp, target, "tar.gz")
        except ValidationError:
            raise
        except LocalsbError as e:
            raise LocalFileError(f"Cannot copy {sandbox_id}:{remote} to {target}: {e.message}") from None
    files, total = res["filesWritten"], res["bytesWritten"]
    if not ctx.out.json_mode:
        ctx.out.success(f"Copied {sandbox_id}:{remote} → {target} ({files} files, {total} bytes)")
    return {"source": f"{sandbox_id}:{remote}", "destination": target, "bytesTransferred": total,
            "filesTransferred": files}
