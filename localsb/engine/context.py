"""What every part of the engine is handed: the store, the clock, the pool, the cgroup driver, paths.

Built once (by ``Engine``, a supervisor, a gateway) and passed to the parts; no part fetches any of
it from a module global or from ``Engine``. The pool and the cgroup driver open on first use (the
pool mount costs ~0.1 s the first time on a machine; ``exec``, ``get``, ``list`` never need them).
"""
from __future__ import annotations

import os

from localsb.linux.private import private_dir

from .clock import Clock
from .store import Store


class Context:
    def __init__(self, state_dir: str, clock: Clock | None = None):
        self.state_dir = os.path.abspath(state_dir)
        for sub in ("", "run", "out", "logs"):     # 0700: other users' reach ends here
            private_dir(os.path.join(self.state_dir, sub))
        self.store = Store(os.path.join(self.state_dir, "state.db"))
        self.clock = clock or Clock()
        import hashlib
        self.tag = hashlib.sha256(self.state_dir.encode()).hexdigest()[:8]
        self.org_names: dict = {}    # org id -> display name (mockcloud fills it)
        self._pool = None
        self._cg = None

    # mechanisms, opened lazily ---------------------------------------------------------------------
    @property
    def pool(self):
        if self._pool is None:
            from localsb.linux.storage import open_pool
            self._pool = open_pool(self.state_dir)
        return self._pool

    @property
    def cgroups(self):
        if self._cg is None:
            from localsb.linux.cgroups import detect
            self._cg = detect()
        return self._cg

    # paths -------------------------------------------------------------------------------------------
    def out_dir(self) -> str:
        return os.path.join(self.state_dir, "out")

    def logs_dir(self) -> str:
        return os.path.join(self.state_dir, "logs")

    def sock_path(self, sandbox_id: str) -> str:
        return os.path.join(self.state_dir, "run", sandbox_id + ".sock")

    def cgroup_name(self, sandbox_id: str) -> str:
        return f"localsb-{self.tag}-{sandbox_id}"
