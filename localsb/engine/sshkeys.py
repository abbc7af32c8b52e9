"""SSH keys and the SSH gateway's daemon record: what `localsb ssh-key` and the engine's hooks use.

The registered keys live in ``<state>/ssh/authorized_keys.json`` (as the hosted account keeps
them); ``ssh_gateway(state_dir)`` starts and stops the gateway process (sshgw.py), which runs
while keys are registered and an interactive sandbox is live.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import struct

from localsb.api import errors as E

from .gateway import LIVE, Daemon

KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")


# keys --------------------------------------------------------------------------------------------
def _keys_path(state_dir: str) -> str:
    return os.path.join(state_dir, "ssh", "authorized_keys.json")


def _read_keys(state_dir: str) -> list:
    try:
        with open(_keys_path(state_dir)) as fh:
            return json.load(fh).get("keys", [])
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise E.StateError(f"Cannot read the SSH keys in {_keys_path(state_dir)}: {e}") from None


def _write_keys(state_dir: str, keys: list) -> None:
    path = _keys_path(state_dir)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"keys": keys}, fh, indent=1)
    os.rename(tmp, path)


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint (``ssh-keygen -l``): unpadded base64 of the blob's digest."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse_public_keys(text: str) -> list:
    """OpenSSH public key lines (a .pub file or authorized_keys, options allowed) -> [dict]."""
    if "PRIVATE KEY" in text:
        raise E.ValidationError("This is a private key: give the public key (the .pub file)")
    keys = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        idx = next((i for i, p in enumerate(parts) if p in KEY_TYPES), None)
        if idx is None or idx + 1 >= len(parts):
            raise E.ValidationError(f"Line {n} is not an OpenSSH public key (expected '<type> <base64> [comment]'"
                                    f" with type one of {', '.join(KEY_TYPES[:3])}, ...)")
        ktype, b64 = parts[idx], parts[idx + 1]
        try:
            blob = base64.b64decode(b64, validate=True)
            (tlen,) = struct.unpack_from("!I", blob)
            embedded = blob[4:4 + tlen].decode()
        except (ValueError, struct.error, UnicodeDecodeError):
            raise E.ValidationError(f"Line {n}: the key data is not valid base64 of an SSH key") from None
        if embedded != ktype:
            raise E.ValidationError(f"Line {n}: the key data is a {embedded or 'damaged'} key, not {ktype}")
        keys.append({"fingerprint": fingerprint(blob), "type": ktype, "key": b64,
                     "comment": " ".join(parts[idx + 2:])})
    if not keys:
        raise E.ValidationError("No public key found: give an OpenSSH public key file (e.g. ~/.ssh/id_ed25519.pub)")
    return keys


def key_add(state_dir: str, text: str) -> dict:
    from localsb.api.models import now_iso
    keys = _read_keys(state_dir)
    known = {k["fingerprint"] for k in keys}
    added = []
    for k in parse_public_keys(text):
        new = k["fingerprint"] not in known
        if new:
            k["createdAt"] = now_iso()
            keys.append(k)
            known.add(k["fingerprint"])
        added.append({**{f: k[f] for f in ("fingerprint", "type", "comment")}, "added": new})
    _write_keys(state_dir, keys)
    return {"keys": added}


def key_list(state_dir: str) -> list:
    return [{f: k.get(f) for f in ("fingerprint", "type", "comment", "createdAt")} for k in _read_keys(state_dir)]


def key_remove(state_dir: str, fp: str) -> dict:
    keys = _read_keys(state_dir)
    want = fp if fp.startswith("SHA256:") else "SHA256:" + fp
    left = [k for k in keys if k["fingerprint"] != want]
    if len(left) == len(keys):
        raise E.NotFound(f"SSH key not found: {fp} (see localsb ssh-key list)")
    _write_keys(state_dir, left)
    return {"fingerprint": want, "removed": True}


def keys_registered(state_dir: str) -> bool:
    try:
        return bool(_read_keys(state_dir))
    except E.StateError:
        return False


def registered_blobs(state_dir: str) -> set:
    return {base64.b64decode(k["key"]) for k in _read_keys(state_dir)}


class SshGatewayDaemon(Daemon):
    def needed(self, store, exclude=None) -> bool:
        if not keys_registered(self.state_dir):
            return False
        marks = ",".join("?" for _ in LIVE)
        rows = store.all(f"SELECT id FROM sandboxes WHERE status IN ({marks}) AND mode != 'oneshot'", *LIVE)
        return any(r["id"] != exclude for r in rows)


def ssh_gateway(state_dir: str) -> SshGatewayDaemon:
    return SshGatewayDaemon(state_dir, "sshgw", "localsb.engine.sshgw", "LOCALSB_SSH_PORT", 2222)
