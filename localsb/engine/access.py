"""The network and SSH parts: a sandbox's port URL, `cloud ssh`'s argv, the registered SSH keys."""
from __future__ import annotations

from .common import live_row
from .network import LIVE, url_label


class Network:
    """Port URLs (the HTTP gateway, gateway.py, serves them); links and egress live in network.py."""

    def __init__(self, ctx):
        self.ctx = ctx

    def sandbox_url(self, row) -> str | None:
        """``http://<name>-<identifier>.localhost:<gateway port>`` for a sandbox with --port."""
        from .store import loads
        if isinstance(row, str):
            row = self.ctx.store.one("SELECT * FROM sandboxes WHERE id=?", row)
        if row is None or not loads(row["spec"], {}).get("port"):
            return None
        from .gateway import http_gateway
        gw = http_gateway(self.ctx.state_dir)
        port = gw.port()
        if port is None and row["status"] in LIVE:
            port = gw.ensure()  # it died (SIGKILL?): a live sandbox with a port needs it
        if port is None:
            port = gw.configured_port() or gw.default_port
        return f"http://{url_label(row)}.localhost:{port}"


class Ssh:
    """`cloud ssh` and `localsb ssh-key`; the SSH gateway itself is sshgw.py."""

    def __init__(self, ctx):
        self.ctx = ctx

    def ssh_command(self, sandbox_id: str, command: str | None = None, *, org_id=None) -> list[str]:
        """The argv of ``cloud ssh``: a direct attach (a PTY shell, or ``command`` with its exit
        code) through localsb.engine.sshgw, which needs no key and no ssh client. Plain ssh, scp
        and sftp go through the SSH gateway instead (``ssh -p <port> <id>@localhost``)."""
        import sys
        row = live_row(self.ctx, sandbox_id, org_id)
        argv = [sys.executable, "-m", "localsb.engine.sshgw", "attach", self.ctx.state_dir, row["id"]]
        if command is not None:
            argv += ["--", command]
        return argv

    def ssh_key_add(self, text: str) -> dict:
        from .sshkeys import key_add, keys_registered, ssh_gateway
        first = not keys_registered(self.ctx.state_dir)
        info = key_add(self.ctx.state_dir, text)
        if first and self.ctx.store.one("SELECT 1 FROM sandboxes WHERE status IN ('idle','running','paused',"
                                    "'suspended') AND mode != 'oneshot' LIMIT 1"):
            ssh_gateway(self.ctx.state_dir).ensure()
        return info

    def ssh_key_list(self) -> dict:
        from .sshkeys import key_list, ssh_gateway
        gw = ssh_gateway(self.ctx.state_dir)
        return {"keys": key_list(self.ctx.state_dir), "port": gw.port() or gw.configured_port() or gw.default_port}

    def ssh_key_remove(self, fingerprint: str) -> dict:
        from .sshkeys import key_remove, keys_registered, ssh_gateway
        info = key_remove(self.ctx.state_dir, fingerprint)
        if not keys_registered(self.ctx.state_dir):
            ssh_gateway(self.ctx.state_dir).stop_if_unneeded()
        return info
