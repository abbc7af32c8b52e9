"""`ssh-key add|list|remove`: the public keys that may reach sandboxes over SSH (as the hosted
account's SSH keys); the local SSH gateway accepts these and refuses every other key."""
from __future__ import annotations

from ..tree import arg, command, group


def register(sub):
    group(sub, "ssh-key", aliases=["ssh-keys"], help="Manage the SSH public keys that may reach sandboxes",
          examples=[("localsb ssh-key add ~/.ssh/id_ed25519.pub", "Register a public key"),
                    ("localsb ssh-key list", "List keys and the gateway's ssh command"),
                    ("localsb ssh-key remove SHA256:AbCd...", "Remove a key by fingerprint")],
          populate=_commands)


def _commands(children):
    p = command(children, "add", aliases=["new"], help="Register a public key (a .pub file; - reads stdin)",
                handler=add, examples=["localsb ssh-key add ~/.ssh/id_ed25519.pub"])
    arg(p, "file", help="OpenSSH public key file (one or more keys), or - for stdin")

    command(children, "list", aliases=["ls"], help="List the registered public keys", handler=list_,
            dry_run=True, examples=["localsb ssh-key list", "localsb ssh-key list --json"])

    p = command(children, "remove", aliases=["rm", "del", "delete"], help="Remove a public key by fingerprint",
                handler=remove, examples=["localsb ssh-key remove SHA256:AbCd..."])
    arg(p, "fingerprint", help="The key's SHA256 fingerprint, as list shows it")


def _read(path: str, ctx) -> str:
    from ..errors import LocalFileError

    if path == "-":
        data = ctx.out.binary_stdin().read()
    else:
        try:
            with open(path, "rb") as fh:
                data = fh.read(1 << 20)
        except OSError as e:
            raise LocalFileError(f"Cannot read {path}: {e.strerror}") from None
    return data.decode("utf-8", "replace")


def _backend(ctx, name):
    """The backend's key method; a backend without one (cloud) is 'not supported' (main maps it)."""
    fn = getattr(ctx.backend, name, None)
    if fn is None:
        raise NotImplementedError(name)
    return fn


def add(ctx):
    out = ctx.out
    result = _backend(ctx, "ssh_key_add")(_read(ctx.args.file, ctx))
    if out.json_mode:
        out.json(result)
        return 0
    for k in result.get("keys") or []:
        verb = "added" if k.get("added") else "already registered:"
        out.success(f"{verb} SSH key {k['fingerprint']} ({k['type']}{', ' + k['comment'] if k.get('comment') else ''})")
    return 0


def list_(ctx):
    from ..output import plural
    from ._common import dash

    out = ctx.out
    result = _backend(ctx, "ssh_key_list")()
    keys = result.get("keys") or []
    if out.json_mode:
        out.json(result)
        return 0
    if not keys:
        out.info("No SSH keys registered (add one: localsb ssh-key add ~/.ssh/id_ed25519.pub)")
        return 0
    out.table(["Fingerprint", "Type", "Comment", "Added"],
              [[k["fingerprint"], k["type"], dash(k.get("comment")), dash(k.get("createdAt"))] for k in keys])
    out.info(f"Total: {len(keys)} {plural(len(keys), 'key', 'keys')}")
    if result.get("port"):
        out.info(f"ssh -p {result['port']} <sandbox-id>@localhost")
    return 0


def remove(ctx):
    out = ctx.out
    result = _backend(ctx, "ssh_key_remove")(ctx.args.fingerprint)
    if out.json_mode:
        out.json(result)
    else:
        out.success(f"removed SSH key {result['fingerprint']}")
    return 0
