"""Root filesystem skeletons.

The ``base`` runtime is the host's /usr (mounted as the lower layer of an overlay at spawn time)
plus a skeleton of the sandbox's own: the /bin, /lib... links into /usr, and an /etc of its own
with root and agentuity users, hosts, resolv.conf, the CA certificates and the alternatives links.
Never the host's /etc as a whole, /root, /home or /var: they hold secrets (shadow, SSH host keys,
credentials).
"""
from __future__ import annotations

import json
import os
import shutil

from . import syscalls as sc

# /etc entries that carry no secrets and that programs from the host's /usr need to work.
ETC_ALLOW = (
    "alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "localtime",
    "timezone", "ssl/certs", "ssl/openssl.cnf", "ca-certificates", "ca-certificates.conf",
    "os-release", "debian_version", "profile", "profile.d", "bash.bashrc", "skel", "mime.types",
    "inputrc", "terminfo", "magic", "magic.mime", "login.defs", "locale.alias", "locale.gen",
    "gai.conf", "host.conf", "protocols", "services", "networks", "ethertypes", "rpc", "mailcap",
    "shells", "environment", "default/locale", "python3", "python3.11", "perl", "X11/xorg.conf.d",
    "dpkg/origins", "issue", "issue.net", "adduser.conf", "deluser.conf", "xattr.conf",
    "manpath.config", "mke2fs.conf", "vim", "emacs", "gitconfig", "npmrc",
    "pam.d", "pam.conf", "security/limits.conf", "security/limits.d", "security/pam_env.conf",
    "security/access.conf", "security/group.conf", "security/time.conf", "security/namespace.conf",
    "security/capability.conf",
)

PASSWD = ("root:x:0:0:root:/root:/bin/bash\n"
          "agentuity:x:1000:1000:agentuity:/home/agentuity:/bin/bash\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
GROUP = "root:x:0:\nagentuity:x:1000:\nnogroup:x:65534:\n"
WORKSPACE = "/home/agentuity"
SKELETON_DIRS = ("usr", "etc", "home/agentuity", "root", "tmp", "var/tmp", "var/log", "var/cache",
                 "var/lib", "run", "opt", "mnt", "srv", "media", "proc", "sys", "dev")


def _copy_entry(src: str, dst: str) -> None:
    if os.path.islink(src):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.lexists(dst):
            os.symlink(os.readlink(src), dst)
    elif os.path.isdir(src):
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True,
                        ignore_dangling_symlinks=True)
    elif os.path.isfile(src):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)


def build_host_skeleton(root: str, hostname: str = "sandbox") -> None:
    """Write the ``base`` runtime's skeleton into ``root`` (an empty directory)."""
    for d in SKELETON_DIRS:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    os.chmod(os.path.join(root, "var/tmp"), 0o1777)
    os.chmod(os.path.join(root, "root"), 0o700)
    # The host's merged-/usr links (bin -> usr/bin, ...), whichever exist.
    for link in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = "/" + link
        if os.path.islink(host):
            os.symlink(os.readlink(host), os.path.join(root, link))
    etc = os.path.join(root, "etc")
    for entry in ETC_ALLOW:
        src = os.path.join("/etc", entry)
        if os.path.lexists(src):
            _copy_entry(src, os.path.join(etc, entry))
    with open(os.path.join(etc, "passwd"), "w") as fh:
        fh.write(PASSWD)
    with open(os.path.join(etc, "group"), "w") as fh:
        fh.write(GROUP)
    with open(os.path.join(etc, "shadow"), "w") as fh:
        fh.write("root:*:19000:0:99999:7:::\nagentuity:*:19000:0:99999:7:::\n")
    os.chmod(os.path.join(etc, "shadow"), 0o640)
    with open(os.path.join(etc, "hostname"), "w") as fh:
        fh.write(hostname + "\n")
    with open(os.path.join(etc, "hosts"), "w") as fh:
        fh.write("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    with open(os.path.join(etc, "resolv.conf"), "w") as fh:
        # No network by default: a resolver that answers nothing rather than the host's.
        fh.write("nameserver 127.0.0.1\n")
    if not os.path.lexists(os.path.join(etc, "os-release")) and os.path.exists("/usr/lib/os-release"):
        os.symlink("../usr/lib/os-release", os.path.join(etc, "os-release"))
    os.chown(os.path.join(root, "home/agentuity"), 1000, 1000)
    os.chmod(os.path.join(root, "home/agentuity"), 0o755)


LAYERS_FILE = "layers.json"
VOLUME_DIRS = ("root", "upper", "work", "usr.upper", "usr.work")


def read_layers(volume: str) -> dict:
    """The read-only lower layers under a sandbox volume's own writable ones: ``root`` (its /) and
    ``usr`` (its /usr, for runtimes on the host's /usr), each a list of host paths, top first.

    A volume without the file is a whole tree of its own (a snapshot built before this layout, or
    by ``snapshot build`` of an older localsb): it serves as the lower itself."""
    try:
        with open(os.path.join(volume, LAYERS_FILE)) as fh:
            return json.load(fh)
    except FileNotFoundError:
        usr = []
        if os.path.isdir(os.path.join(volume, "usr.upper")):
            usr = [os.path.join(volume, "usr.upper"), "/usr"]
        return {"root": [os.path.join(volume, "root")], "usr": usr, "legacy": True}


def write_layers(volume: str, layers: dict) -> None:
    with open(os.path.join(volume, LAYERS_FILE), "w") as fh:
        json.dump({"root": list(layers["root"]), "usr": list(layers.get("usr") or [])}, fh)


def make_volume_dirs(volume: str, base: int) -> None:
    """The writable side of a sandbox volume: an empty ``root`` (the mount point), the upper and
    work directories of its / and /usr overlays, owned by the sandbox's root (host id ``base``)."""
    for d in VOLUME_DIRS:
        p = os.path.join(volume, d)
        os.makedirs(p, mode=0o755, exist_ok=True)
        os.chmod(p, 0o755)
        os.chown(p, base, base)


def mount_root(volume: str, userns_fd: int | None) -> None:
    """mount(2) the sandbox's root at ``volume``/root: an overlay whose lower layers are idmapped,
    read-only clones of its images (open_tree + mount_setattr MOUNT_ATTR_IDMAP, so files owned by
    host root show as the sandbox's root) and whose upper layer is ``volume``/upper, owned by the
    sandbox's range; then the same for /usr when the runtime has a /usr lower (the host's).

    Layers are named to overlayfs as /proc/self/fd/N, so the mount options seen in the sandbox's
    mountinfo name no host path. On failure nothing stays mounted."""
    layers = read_layers(volume)
    root = os.path.join(volume, "root")
    fds = []

    def clone(src):
        fd = sc.open_tree(src, sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC | sc.AT_RECURSIVE)
        fds.append(fd)
        attrs = sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NODEV
        sc.mount_setattr(fd, attrs | (sc.MOUNT_ATTR_IDMAP if userns_fd is not None else 0), userns_fd or 0)
        return f"/proc/self/fd/{fd}"

    def path_fd(p):
        fd = os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        fds.append(fd)
        return f"/proc/self/fd/{fd}"

    try:
        lowers = ":".join(clone(src) for src in layers["root"])
        sc.mount("overlay", root, "overlay", sc.MS_NODEV | sc.MS_NOSUID,
                 f"lowerdir={lowers},upperdir={path_fd(os.path.join(volume, 'upper'))},"
                 f"workdir={path_fd(os.path.join(volume, 'work'))}")
        try:
            if layers.get("usr"):
                lowers = ":".join(clone(src) for src in layers["usr"])
                sc.mount("overlay", os.path.join(root, "usr"), "overlay", sc.MS_NODEV | sc.MS_NOSUID,
                         f"lowerdir={lowers},upperdir={path_fd(os.path.join(volume, 'usr.upper'))},"
                         f"workdir={path_fd(os.path.join(volume, 'usr.work'))}")
        except BaseException:
            unmount_tree(root)
            raise
    finally:
        for fd in fds:
            os.close(fd)


def unmount_tree(path: str) -> None:
    """umount2(2) every mount at or below ``path``, deepest first (reads /proc/self/mountinfo)."""
    path = os.path.realpath(path)
    targets = []
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                mp = line.split()[4].replace("\\040", " ")
                if mp == path or mp.startswith(path + "/"):
                    targets.append(mp)
    except OSError:
        return
    for mp in sorted(targets, key=len, reverse=True):
        try:
            sc.umount(mp)
        except OSError:
            try:
                sc.umount(mp, sc.MNT_DETACH)
            except OSError:
                pass


def is_mounted(path: str) -> bool:
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as fh:
            return any(line.split()[4] == path for line in fh)
    except OSError:
        return False
