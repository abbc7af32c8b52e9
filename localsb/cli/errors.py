"""Errors only the CLI raises: the local side of a command (a file on this machine)."""
from __future__ import annotations

from localsb.api.errors import LocalsbError


class LocalFileError(LocalsbError):
    """A local file or directory named on the command line is missing or unusable (exit 7)."""
    code = "FILE_ERROR"
