"""`cloud ssh <id> [command] [--show]`: a shell (or one command) in a sandbox."""
from __future__ import annotations

from ..tree import arg, command, opt


def register(sub):
    p = command(sub, "ssh", help="Open a shell in a sandbox, or run one command in it", handler=ssh, dry_run=True,
                examples=[("localsb cloud ssh sbx_abc123xyz", "Shell in a sandbox"),
                          ("localsb cloud ssh sbx_abc123xyz 'ls -la /workspace'", "Run a command and exit"),
                          ("localsb cloud ssh sbx_abc123xyz --show", "Show the command without running it")])
    arg(p, "sandbox_id", metavar="sandbox-id", help="Sandbox ID")
    arg(p, "remote_command", metavar="command", nargs="?", help="Command to run instead of a shell")
    opt(p, "--show", action="store_true", help="Print the command that connects, without running it")


def ssh(ctx):
    import shlex

    a, out = ctx.args, ctx.out
    argv = ctx.backend.ssh_command(a.sandbox_id, a.remote_command, org_id=ctx.org_id)
    if a.show or a.dry_run:
        if out.json_mode:
            out.json({"command": argv})
        else:
            out.line(shlex.join(argv))
        return 0
    import subprocess
    out.flush()
    # The shell takes over the terminal: its exit status is ours.
    return subprocess.call(argv)
