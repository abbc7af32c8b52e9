"""The local backend: the engine, in this process."""
from __future__ import annotations

from localsb.engine import Engine


class LocalBackend(Engine):
    """localsb's default backend: every command runs against the engine of ``state_dir``."""
