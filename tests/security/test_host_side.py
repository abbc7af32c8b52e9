"""Other local users (issue 14, items 2 and 3): nothing under the state directory is theirs to read,
and nothing a sandbox writes ever runs with privilege on the host.

Each test starts from a state directory opened to everyone (0755, as `mkdir` under /var/lib makes
it, or as an older localsb left it): localsb must close it (0700) and keep its files 0600; the
btrfs pool is mounted nosuid,nodev, so that a setuid-root binary a sandbox leaves in its volume
stays harmless even where directory modes were loosened by hand.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile

import pytest

NOBODY = 65534
# The system's interpreter: this one may live under /root, which another user cannot reach.
PYTHON = "/usr/bin/python3"


def as_nobody(*argv, timeout=60) -> subprocess.CompletedProcess:
    """Run argv as uid/gid 65534 with no supplementary groups (an ordinary other user).

    setresuid(2) in the forked child, before execve(2): the kernel drops every capability, so
    the program's own path is resolved as that user. (`setpriv --reuid` keeps its capabilities
    up to the execve, so the path of the program it runs is resolved with CAP_DAC_OVERRIDE: it
    would reach through a 0700 directory that the user cannot.)"""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, cwd="/",
                              env={"PATH": "/usr/bin:/bin", "LANG": "C"},
                              user=NOBODY, group=NOBODY, extra_groups=[])
    except OSError as e:        # the execve(2) itself failed, as that user
        return subprocess.CompletedProcess(argv, 126, "", str(e))


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _mounts_at(path: str) -> list[list[str]]:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as fh:
        return [line.split() for line in fh if line.split()[4] == real]


@pytest.fixture
def opened_state(state_dir):
    """The state dir as a careless mkdir (or an older localsb) leaves it: 0755."""
    os.chmod(state_dir, 0o755)
    return state_dir


@pytest.fixture
def secret_sandbox(cli, opened_state):
    """A live sandbox given a secret with --env, and one execution that printed it."""
    secret = "lsb-secret-" + secrets.token_hex(8)
    p = cli("sb", "create", "--env", f"LSB_SECRET={secret}", "--json", check=0)
    sid = json.loads(p.stdout)["sandboxId"]
    p = cli("sb", "exec", sid, "--", "sh", "-c", 'echo "out:$LSB_SECRET"; echo "err:$LSB_SECRET" >&2',
            check=0)
    assert secret.encode() in p.stdout
    volume = os.path.join(opened_state, "pool", "sandboxes", sid)
    assert os.path.isdir(os.path.join(volume, "root"))
    return sid, secret, volume


def test_state_dir_0700_and_its_files_0600(secret_sandbox, opened_state):
    sd = opened_state
    assert _mode(sd) == 0o700, oct(_mode(sd))
    for sub in ("run", "out", "logs"):
        assert _mode(os.path.join(sd, sub)) == 0o700, (sub, oct(_mode(os.path.join(sd, sub))))
    for name in ("state.db", "state.db-wal", "state.db-shm", "pool.img"):
        p = os.path.join(sd, name)
        if os.path.exists(p):
            assert _mode(p) == 0o600, (name, oct(_mode(p)))
    assert os.path.exists(os.path.join(sd, "state.db"))
    outs = os.listdir(os.path.join(sd, "out"))
    assert any(n.endswith(".stdout") for n in outs) and any(n.endswith(".done") for n in outs)
    for d in ("out", "logs"):
        for name in os.listdir(os.path.join(sd, d)):
            p = os.path.join(sd, d, name)
            if os.path.isfile(p):
                assert _mode(p) == 0o600, (d, name, oct(_mode(p)))


def test_fresh_state_dir_is_made_0700_with_a_0600_database(state_dir, cli):
    fresh = os.path.join(state_dir, "fresh-home")
    os.chmod(state_dir, 0o755)
    p = cli("sb", "list", "--json", env={"LOCALSB_HOME": fresh}, check=0)
    assert json.loads(p.stdout)["total"] == 0
    assert _mode(fresh) == 0o700
    assert _mode(os.path.join(fresh, "state.db")) == 0o600
    for name in ("state.db-wal", "state.db-shm"):
        if os.path.exists(os.path.join(fresh, name)):
            assert _mode(os.path.join(fresh, name)) == 0o600


_PROBE = r"""
import json, os, socket, sys
found = []
for item in sys.argv[1:]:
    kind, path = item.split(":", 1)
    try:
        if kind == "dir":
            found.append((path, "listed", len(os.listdir(path))))
        elif kind == "sock":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            found.append((path, "connected", 0))
        else:
            with open(path, "rb") as fh:
                found.append((path, "read", len(fh.read(1 << 20))))
    except OSError:
        pass
print(json.dumps(found))
"""


def test_other_user_can_read_list_or_connect_to_nothing(secret_sandbox, opened_state):
    sid, secret, volume = secret_sandbox
    sd = opened_state
    targets = [f"dir:{sd}", f"dir:{os.path.join(sd, 'pool')}",
               f"dir:{os.path.join(sd, 'pool', 'sandboxes')}", f"dir:{os.path.join(volume, 'root')}",
               f"dir:{os.path.join(volume, 'root', 'home', 'agentuity')}"]
    for base, _, names in os.walk(sd):
        if base.startswith(os.path.join(sd, "pool")):
            continue    # the sandboxes' own trees: reached only through the pool, listed above
        for d in ("run", "out", "logs"):
            if base == os.path.join(sd, d):
                targets.append(f"dir:{base}")
        for n in names:
            p = os.path.join(base, n)
            st = os.lstat(p)
            if stat.S_ISSOCK(st.st_mode):
                targets.append(f"sock:{p}")
            elif stat.S_ISREG(st.st_mode) and n != "pool.img":
                targets.append(f"file:{p}")
    assert any(t.endswith("state.db") for t in targets)
    assert any(t.startswith("sock:") for t in targets), "a live sandbox has a supervisor socket"
    assert any(t.endswith(".stdout") for t in targets)
    # /etc/passwd: the probe does find what another user may read
    p = as_nobody(PYTHON, "-I", "-S", "-c", _PROBE, "file:/etc/passwd", *targets)
    assert p.returncode == 0, p.stderr
    found = json.loads(p.stdout)
    assert found[:1] and found[0][0] == "/etc/passwd"
    assert found[1:] == [], "another user reached the state directory"
    # and no file of the state directory hands the secret to a user who guesses its path
    p = as_nobody("grep", "-rl", secret, sd)
    assert secret not in p.stdout and p.stdout.strip() == "", p.stdout


def _plant_setuid_id(path: str) -> None:
    """What hostile code in the sandbox could leave: a setuid-root copy of id(1)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copy("/usr/bin/id", path)
    os.chown(path, 0, 0)
    os.chmod(path, 0o4755)
    assert os.stat(path).st_mode & stat.S_ISUID


def _runs_as_root(path: str) -> bool:
    p = as_nobody(path)
    return p.returncode == 0 and ("euid=0" in p.stdout or p.stdout.startswith("uid=0"))


def test_setuid_binary_planted_in_a_volume_never_runs_as_root(secret_sandbox, opened_state):
    sid, _, volume = secret_sandbox
    # the same file where nothing protects it does give root: the check below can see it
    control = tempfile.mkdtemp(prefix="lsbtest-suid-", dir="/tmp")
    try:
        os.chmod(control, 0o755)
        _plant_setuid_id(os.path.join(control, "x"))
        assert _runs_as_root(os.path.join(control, "x"))
    finally:
        shutil.rmtree(control)
    planted = [os.path.join(volume, "root", "var", "tmp", "x"),       # the volume (the pool)
               os.path.join(volume, "root", "usr", "local", "bin", "x")]    # the /usr overlay
    for path in planted:
        _plant_setuid_id(path)
        assert not _runs_as_root(path), path
    # Even where an admin loosened the state directory by hand, the mounts refuse setuid.
    os.chmod(opened_state, 0o755)
    try:
        for path in planted:
            p = as_nobody(path)
            assert p.returncode == 0, (path, p.stdout, p.stderr)    # reachable now, so nosuid is tested
            assert "euid=0" not in p.stdout and not p.stdout.startswith("uid=0"), (path, p.stdout)
    finally:
        os.chmod(opened_state, 0o700)


def test_pool_mounted_nosuid_nodev(engine, state_dir):
    pool = engine.pool.root
    (mount,) = _mounts_at(pool)[-1:]
    opts = mount[5].split(",")
    assert "nosuid" in opts and "nodev" in opts, mount


def test_pool_mounted_by_an_older_version_is_remounted_nosuid_nodev(engine, state_dir):
    from localsb.linux import storage, syscalls as sc
    pool = engine.pool.root
    # an older localsb mounted the pool image with `-o loop,noatime` only
    sc.mount(None, pool, None, sc.MS_REMOUNT | sc.MS_BIND)
    opts = _mounts_at(pool)[-1][5].split(",")
    assert "nosuid" not in opts and "nodev" not in opts and "noatime" in opts
    os.chmod(os.path.join(state_dir, "pool.img"), 0o644)
    storage.open_pool(state_dir)
    opts = _mounts_at(pool)[-1][5].split(",")
    assert "nosuid" in opts and "nodev" in opts and "noatime" in opts, opts
    assert len(_mounts_at(pool)) == 1
    assert _mode(os.path.join(state_dir, "pool.img")) == 0o600


def test_state_dir_on_a_btrfs_mounted_with_suid_gets_a_nosuid_pool(state_dir):
    """A state directory on a btrfs filesystem of the host's (mounted suid, dev): the pool subvolume
    is bound onto itself nosuid,nodev, and close_pool removes that bind mount again."""
    from localsb.linux import btrfs, storage
    image = os.path.join(state_dir, "host-btrfs.img")
    mnt = tempfile.mkdtemp(prefix="lsbtest-hostfs-", dir="/tmp")
    with open(image, "wb") as fh:
        fh.truncate(300 << 20)
    btrfs.mkfs(image)
    subprocess.run(["mount", "-t", "btrfs", "-o", "loop", image, mnt], check=True)
    try:
        sd = os.path.join(mnt, "state")
        d = storage.open_pool(sd)
        assert d.name == "btrfs" and d.image is None
        opts = _mounts_at(d.root)[-1][5].split(",")
        assert "nosuid" in opts and "nodev" in opts, opts
        assert _mode(sd) == 0o700
        assert storage.open_pool(sd).root == d.root and len(_mounts_at(d.root)) == 1
        storage.close_pool(sd)
        assert _mounts_at(d.root) == []
        storage.close_pool(sd)      # idempotent
        btrfs.delete_subvolume(os.path.join(sd, "pool"))
    finally:
        for line in _mounts_at(os.path.join(mnt, "state", "pool")):
            subprocess.run(["umount", "-l", line[4]])
        subprocess.run(["umount", mnt], check=True)
        os.rmdir(mnt)


def test_mockcloud_state_dir_0700_and_db_0600(tmp_path):
    from mockcloud.store import Store
    sd = tmp_path / "mc"
    sd.mkdir(mode=0o755)
    os.chmod(sd, 0o755)
    store = Store(str(sd))
    try:
        store.key_create("acme")
        assert _mode(str(sd)) == 0o700
        assert (sd / "mockcloud.db").exists() and (sd / "mockcloud.db-wal").exists()
        for name in ("mockcloud.db", "mockcloud.db-wal", "mockcloud.db-shm"):
            if (sd / name).exists():
                assert _mode(str(sd / name)) == 0o600, name
    finally:
        store.close()


def test_supervisor_socket_unreachable_by_other_users(secret_sandbox, opened_state):
    """The socket of a live sandbox's supervisor: even with the state dir opened by hand, run/ is
    0700, so no other user can ask the supervisor to run anything."""
    sid, _, _ = secret_sandbox
    sock = os.path.join(opened_state, "run", sid + ".sock")
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    os.chmod(opened_state, 0o755)
    try:
        p = as_nobody(PYTHON, "-I", "-S", "-c", _PROBE, f"sock:{sock}",
                      f"dir:{os.path.join(opened_state, 'run')}")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout) == []
    finally:
        os.chmod(opened_state, 0o700)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)     # root still can
    try:
        s.connect(sock)
    finally:
        s.close()
