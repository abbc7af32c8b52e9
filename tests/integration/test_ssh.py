"""Issue 8: SSH. Registered keys (`localsb ssh-key`), the SSH gateway (plain OpenSSH ssh, scp and
sftp with user name = sandbox id; other keys refused) and `cloud ssh` (a PTY shell or one command,
its exit code passed through). Traffic: loopback only."""
from __future__ import annotations

import io
import json
import os
import pty
import select
import shutil
import subprocess
import time

import pytest

from localsb.api import errors as E
from localsb.api.specs import CreateSpec
from localsb.engine.sshkeys import fingerprint, parse_public_keys, ssh_gateway
from localsb.engine.store import process_alive

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(not shutil.which("ssh") or not shutil.which("ssh-keygen"),
                                 reason="needs the OpenSSH client: apt-get install -y openssh-client")]

ENV = {"LOCALSB_SSH_PORT": "0"}


def keypair(d, name):
    path = os.path.join(d, name)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", path], check=True)
    return path


def ssh_opts(key):
    return ["-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20"]


def ex(engine, sid, *cmd):
    out = io.BytesIO()
    r = engine.sandbox_execute(sid, list(cmd), stdout=out, stderr=io.BytesIO())
    return r["exitCode"], out.getvalue().decode()


@pytest.fixture
def keys(state_dir):
    d = os.path.join(state_dir, "client")
    os.makedirs(d)
    return keypair(d, "registered"), keypair(d, "stranger")


@pytest.fixture
def gw(engine, cli, keys, monkeypatch):
    """A registered key, a live sandbox, the gateway's port."""
    monkeypatch.setenv("LOCALSB_SSH_PORT", "0")
    cli("ssh-key", "add", keys[0] + ".pub", env=ENV, check=0)
    sid = engine.sandbox_create(CreateSpec())["sandboxId"]
    port = json.loads(cli("ssh-key", "list", "--json", env=ENV, check=0).stdout)["port"]
    yield sid, port
    try:
        engine.sandbox_destroy(sid)
    except E.NotFound:
        pass


def ssh(port, key, user, *command, input=None, tty=False):
    argv = ["ssh", "-p", str(port), *ssh_opts(key)] + (["-tt"] if tty else []) + [f"{user}@127.0.0.1", *command]
    return subprocess.run(argv, input=input, capture_output=True, timeout=60)


def test_key_parsing_and_fingerprints_match_openssh(keys):
    pub = open(keys[0] + ".pub").read()
    [k] = parse_public_keys("# comment line\n" + pub)
    expected = subprocess.run(["ssh-keygen", "-l", "-f", keys[0] + ".pub"], capture_output=True,
                              text=True).stdout.split()[1]
    assert k["fingerprint"] == expected and k["type"] == "ssh-ed25519" and k["comment"] == "registered@test"
    with pytest.raises(E.ValidationError, match="private key"):
        parse_public_keys(open(keys[0]).read())
    with pytest.raises(E.ValidationError, match="not an OpenSSH public key"):
        parse_public_keys("hello world\n")
    blob = __import__("base64").b64decode(pub.split()[1])
    with pytest.raises(E.ValidationError, match="ssh-ed25519 key, not ssh-rsa"):
        parse_public_keys("ssh-rsa " + pub.split()[1])
    assert fingerprint(blob) == expected


def test_ssh_key_cli_add_list_remove(cli, keys):
    p = cli("ssh-key", "add", keys[0] + ".pub", env=ENV, check=0)
    assert "added SSH key SHA256:" in p.stderr.decode()
    p = cli("ssh-key", "add", keys[0] + ".pub", env=ENV, check=0)
    assert "already registered" in p.stderr.decode()
    listed = json.loads(cli("ssh-key", "list", "--json", env=ENV, check=0).stdout)
    assert [k["comment"] for k in listed["keys"]] == ["registered@test"]
    fp = listed["keys"][0]["fingerprint"]
    assert cli("ssh-key", "add", keys[0], env=ENV).returncode == 2           # a private key
    assert cli("ssh-key", "add", "/nonexistent.pub", env=ENV).returncode == 7
    assert cli("ssh-key", "remove", "SHA256:nope", env=ENV).returncode == 4
    cli("ssh-key", "rm", fp, env=ENV, check=0)
    assert json.loads(cli("ssh-key", "list", "--json", env=ENV, check=0).stdout)["keys"] == []


def test_ssh_runs_a_command_and_returns_its_exit_code(gw, keys):
    sid, port = gw
    p = ssh(port, keys[0], sid, "echo on $(hostname) in $PWD; cat; exit 7", input=b"from stdin\n")
    assert p.returncode == 7, p.stderr
    assert p.stdout.decode() == f"on {sid.replace('_', '-')} in /home/agentuity\nfrom stdin\n"
    p = ssh(port, keys[0], sid, "tty; echo $TERM; exit 3", tty=True)
    assert p.returncode == 3, p.stderr
    out = p.stdout.decode().replace("\r", "").splitlines()
    assert out[0].startswith("/dev/pts/") and out[1]


def test_unregistered_keys_and_unknown_sandboxes_are_refused(gw, keys, cli):
    sid, port = gw
    p = ssh(port, keys[1], sid, "true")
    assert p.returncode == 255 and b"Permission denied (publickey)" in p.stderr
    p = ssh(port, keys[0], "sbx_nosuchsandbox", "true")
    assert p.returncode == 255 and b"Sandbox not found: sbx_nosuchsandbox" in p.stderr
    # keys take effect at once: register the second, remove the first
    fp = json.loads(cli("ssh-key", "list", "--json", env=ENV, check=0).stdout)["keys"][0]["fingerprint"]
    cli("ssh-key", "add", keys[1] + ".pub", env=ENV, check=0)
    assert ssh(port, keys[1], sid, "true").returncode == 0
    cli("ssh-key", "remove", fp, env=ENV, check=0)
    p = ssh(port, keys[0], sid, "true")
    assert p.returncode == 255 and b"Permission denied (publickey)" in p.stderr
    assert ssh(port, keys[1], sid, "true").returncode == 0


def test_scp_and_sftp_copy_files_in(engine, gw, keys, state_dir):
    sid, port = gw
    src = os.path.join(state_dir, "client", "payload.bin")
    data = os.urandom(300_000)
    with open(src, "wb") as fh:
        fh.write(data)
    base = ["-P", str(port), *ssh_opts(keys[0])]
    p = subprocess.run(["scp", *base, src, f"{sid}@127.0.0.1:/home/agentuity/copied.bin"], capture_output=True,
                       timeout=60)   # OpenSSH 9: scp speaks SFTP
    assert p.returncode == 0, p.stderr
    p = subprocess.run(["scp", "-O", *base, src, f"{sid}@127.0.0.1:/tmp/legacy.bin"], capture_output=True,
                       timeout=60)   # the old scp protocol: `scp -t` run in the sandbox
    assert p.returncode == 0, p.stderr
    batch = os.path.join(state_dir, "client", "batch")
    with open(batch, "w") as fh:
        fh.write(f"mkdir sub\nput {src} sub/via-sftp.bin\nls sub\n")
    p = subprocess.run(["sftp", *base, "-b", batch, f"{sid}@127.0.0.1"], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rc, out = ex(engine, sid, "sha256sum", "/home/agentuity/copied.bin", "/tmp/legacy.bin",
                 "/home/agentuity/sub/via-sftp.bin")
    import hashlib
    digest = hashlib.sha256(data).hexdigest()
    assert rc == 0 and [line.split()[0] for line in out.splitlines()] == [digest] * 3
    back = os.path.join(state_dir, "client", "back.bin")
    p = subprocess.run(["scp", *base, f"{sid}@127.0.0.1:/tmp/legacy.bin", back], capture_output=True, timeout=60)
    assert p.returncode == 0 and open(back, "rb").read() == data


def test_cloud_ssh_runs_commands_and_a_pty_shell_without_keys(engine, cli):
    sid = engine.sandbox_create(CreateSpec())["sandboxId"]
    try:
        p = cli("cloud", "ssh", sid, "--show", check=0)
        argv = p.stdout.decode().split()
        assert argv[1:] == ["-m", "localsb.engine.sshgw", "attach", engine.state_dir, sid]
        p = cli("cloud", "ssh", sid, "echo $((6*7)) >&2; exit 9")
        assert p.returncode == 9 and p.stderr == b"42\n"
        assert cli("cloud", "ssh", "sbx_nosuchsandbox", "true").returncode == 4
        code, out = _in_pty([os.environ.get("PYTHON", __import__("sys").executable), "-m", "localsb", "cloud", "ssh",
                             sid], b"tty; echo answer=$((6*7)); exit 4\n", engine.state_dir)
        assert code == 4, out
        assert b"/dev/pts/" in out and b"answer=42" in out
    finally:
        engine.sandbox_destroy(sid)


def _in_pty(argv, keys, state_dir):
    """Run argv on a new terminal, type ``keys``, read until it ends; (exit code, output)."""
    from conftest import ROOT
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(LOCALSB_HOME=state_dir, PYTHONPATH=ROOT)
        os.execvp(argv[0], argv)
    out = b""
    sent = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if not sent and (b"$ " in out or b"# " in out or time.monotonic() > deadline - 55):
                os.write(fd, keys)
                sent = True
            if r:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


def test_gateway_runs_while_keys_and_sandboxes_exist(engine, gw, keys):
    sid, port = gw
    info = ssh_gateway(engine.state_dir).info()
    assert info and info["port"] == port and process_alive(info["pid"], info["start"])
    assert ssh(port, keys[0], sid, "true").returncode == 0
    engine.sandbox_destroy(sid)
    assert not process_alive(info["pid"], info["start"])
    assert ssh_gateway(engine.state_dir).info() is None
    # a new sandbox brings it back (keys are registered)
    sid2 = engine.sandbox_create(CreateSpec())["sandboxId"]
    try:
        port2 = ssh_gateway(engine.state_dir).port()
        p = ssh(port2, keys[0], sid2, "exit 5")
        assert p.returncode == 5, p.stderr
    finally:
        engine.sandbox_destroy(sid2)
    assert ssh_gateway(engine.state_dir).info() is None
