"""The fs commands on a sandbox: every path resolved inside its root (engine/files.py, openat2).

Host-side operations on the sandbox's volume: a paused sandbox is read and written without being
thawed, and --disk quotas apply because the writes land in the sandbox's subvolume.
"""
from __future__ import annotations

import os

from localsb.api import errors as E
from .common import sandbox_row


def _files():
    # imported on first use: the file layer (tarfile, zipfile, zlib...) is not on run/exec's path
    from . import files
    return files


class Fs:
    def __init__(self, ctx):
        self.ctx = ctx

    def _fs_root(self, sandbox_id, org_id) -> str:
        row = sandbox_row(self.ctx, sandbox_id, org_id)
        if row["status"] in ("terminated", "failed", "deleted", "stopping") or not row["volume"]:
            raise E.SandboxTerminated(sandbox_id, row["status"])
        return os.path.join(row["volume"], "root")

    def fs_write(self, sandbox_id, files_, *, org_id=None) -> dict:
        return _files().fs_write(self._fs_root(sandbox_id, org_id), files_)

    def fs_write_stream(self, sandbox_id, path, src, *, org_id=None) -> int:
        """Streamed: memory stays flat for a file of any size (parents made like mkdir -p)."""
        return _files().fs_write_file(self._fs_root(sandbox_id, org_id), path, src)

    def fs_read(self, sandbox_id, path, out, *, org_id=None) -> int:
        return _files().fs_read(self._fs_root(sandbox_id, org_id), path, out)

    def fs_list(self, sandbox_id, path=".", *, org_id=None) -> dict:
        return _files().fs_list(self._fs_root(sandbox_id, org_id), path or ".")

    def fs_mkdir(self, sandbox_id, path, *, recursive=False, org_id=None) -> None:
        _files().fs_mkdir(self._fs_root(sandbox_id, org_id), path, recursive)

    def fs_rm(self, sandbox_id, path, *, org_id=None) -> bool:
        return _files().fs_rm(self._fs_root(sandbox_id, org_id), path)

    def fs_rmdir(self, sandbox_id, path, *, recursive=False, org_id=None) -> bool:
        return _files().fs_rmdir(self._fs_root(sandbox_id, org_id), path, recursive)

    def fs_download(self, sandbox_id, path, fmt, out, *, org_id=None) -> int:
        return _files().fs_download(self._fs_root(sandbox_id, org_id), path or ".", fmt or "tar.gz", out)

    def fs_upload(self, sandbox_id, path, fmt, src, *, org_id=None) -> None:
        _files().fs_upload(self._fs_root(sandbox_id, org_id), path or ".", fmt or "", src,
                        spool_dir=os.path.join(self.ctx.state_dir, "out"))
