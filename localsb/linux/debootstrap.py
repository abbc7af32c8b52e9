"""Root filesystems from the package registries: debootstrap, apt-get and npm, run into a directory.

Every command that touches a target directory runs under unshare(1) in a private mount namespace
and a private PID namespace, with the host's network namespace (a sandbox's own netns has no
route out) and an empty environment (`env -i`: the host's PIP_* and similar variables point at
host-only paths). The building process sets PR_SET_PDEATHSIG on unshare, and unshare
--kill-child sets it on the namespace's PID 1: killing the building process (even with SIGKILL)
kills the whole build, and the kernel then drops the namespaces and with them every /proc and
/dev mount made inside the target. Nothing of a killed build stays mounted on the host.

The Debian archive is the machine's own: the first ``URIs:`` of /etc/apt/sources.list.d/*.sources
(or a ``deb`` line of /etc/apt/sources.list). ``LOCALSB_APT_MIRROR`` and
``LOCALSB_APT_SECURITY_MIRROR`` override it (tests use an unreachable one to be offline).
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request

from localsb.api.errors import BuildFailed, HostError, NetworkError, ValidationError

from . import syscalls as sc

HOST_CA_DIR = "/usr/local/share/ca-certificates"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REACH_TIMEOUT = 5.0

# Mounts inside the target, made in the private mount namespace only: /proc, the device nodes
# apt and dpkg need (bound from the host, whether or not the target has real nodes), and the
# host's resolv.conf over the target's own (the image keeps a loopback-only one).
# The pool is mounted nosuid,nodev (nothing a sandbox writes may act on the host); an image build
# in its private mount namespace binds its target over itself with dev,suid,exec, which debootstrap
# and dpkg need (debootstrap refuses a nodev target).
_DEV_BIND_SH = 'mount --bind "$1" "$1" && mount -o remount,bind,dev,suid,exec "$1" && shift && exec "$@"'

_CHROOT_SH = r'''
set -e
T=$1; shift
mount -t proc -o nosuid,nodev,noexec proc "$T/proc"
for n in null zero full random urandom tty; do
  [ -e "$T/dev/$n" ] || : > "$T/dev/$n"
  mount --bind "/dev/$n" "$T/dev/$n"
done
if [ -e /etc/resolv.conf ] && [ -f "$T/etc/resolv.conf" ]; then mount --bind /etc/resolv.conf "$T/etc/resolv.conf"; fi
exec chroot "$T" /usr/bin/env -i PATH=''' + CHROOT_PATH + r''' HOME=/root LANG=C.UTF-8 \
  DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true "$@"
'''

APT_GET = ["apt-get", "-y", "-q", "-o", "Dpkg::Options::=--force-unsafe-io",
           "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
           "-o", "Dpkg::Use-Pty=0"]


# the machine's apt configuration -----------------------------------------------------------------
def read_sources(sources_dir: str = "/etc/apt/sources.list.d", legacy: str = "/etc/apt/sources.list") -> list[dict]:
    """The enabled ``deb`` entries of the machine's apt configuration, in file order:
    [{'uris': [...], 'suites': [...], 'components': [...]}]. deb822 files first, then one-line."""
    out = []
    for path in sorted(glob.glob(os.path.join(sources_dir, "*.sources"))):
        try:
            text = open(path).read()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields, key = {}, None
            for line in stanza.splitlines():
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                if line[0] in " \t" and key:
                    fields[key] += " " + line.strip()
                    continue
                if ":" in line:
                    key, _, value = line.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            if not fields.get("uris"):
                continue
            out.append({"uris": fields["uris"].split(), "suites": fields.get("suites", "").split(),
                        "components": fields.get("components", "").split()})
    for path in [legacy] + sorted(glob.glob(os.path.join(sources_dir, "*.list"))):
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in lines:
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                out.append({"uris": [words[1]], "suites": [words[2]], "components": words[3:]})
    return out


def mirrors(sources: list[dict] | None = None) -> tuple[str, str | None]:
    """(Debian archive URL, security archive URL or None) from the machine's apt sources.

    The archive is the first entry with a suite that is not ``*-security``; the security archive
    the first with one that is."""
    archive = os.environ.get("LOCALSB_APT_MIRROR")
    security = os.environ.get("LOCALSB_APT_SECURITY_MIRROR")
    if archive:
        return archive.rstrip("/"), (security.rstrip("/") if security else None)
    sources = read_sources() if sources is None else sources
    for s in sources:
        if any(not x.endswith("-security") for x in s["suites"]) and archive is None:
            archive = s["uris"][0]
        if any(x.endswith("-security") for x in s["suites"]) and security is None:
            security = s["uris"][0]
    if archive is None:
        archive = "http://deb.debian.org/debian"
    return archive.rstrip("/"), (security.rstrip("/") if security else None)


def check_reachable(url: str, what: str, timeout: float = REACH_TIMEOUT,
                    hint: str = "Build it while online (localsb sandbox runtime build NAME); built runtimes "
                                "work offline") -> None:
    """One HTTP(S) HEAD request with a short timeout; NetworkError at once when it fails, so that
    an offline build stops before debootstrap would retry for minutes."""
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "localsb"})
    try:
        with urllib.request.urlopen(req, timeout=timeout):
            return
    except urllib.error.HTTPError as e:
        if e.code < 500:        # the server answered: reachable (404 on HEAD is the registry's business)
            return
        reason = f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = str(getattr(e, "reason", None) or e)
    raise NetworkError(f"Cannot build {what}: {url} is not reachable ({reason}). {hint}")


# running things ----------------------------------------------------------------------------------
def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: if the building process dies (SIGKILL included), so does this child.
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        os._exit(1)


def _tail(log) -> str:
    """The last meaningful lines of a build log, for an error message."""
    try:
        log.flush()
        with open(log.name, errors="replace") as fh:
            fh.seek(max(0, os.path.getsize(log.name) - 8192))
            lines = [ln.strip() for ln in fh.read().splitlines() if ln.strip()]
    except (OSError, AttributeError):
        return ""
    errs = [ln for ln in lines if ln.startswith(("E:", "dpkg: error", "W: Failure", "npm ERR", "npm error"))]
    return " | ".join((errs or lines)[-3:])


def run_isolated(argv: list, log, *, input: bytes | None = None, capture: bool = False,
                 what: str = "build step", env: dict | None = None, target: str | None = None) -> str:
    """unshare(2) a private mount and PID namespace (host netns kept) and run argv there, its output
    appended to ``log`` (stdout returned instead when ``capture``). BuildFailed on failure. With
    ``target``, that directory is bound over itself with dev,suid,exec in the private namespace."""
    if shutil.which("unshare") is None:
        raise HostError("unshare(1) is missing: apt-get install -y util-linux")
    if target is not None:
        argv = ["sh", "-c", _DEV_BIND_SH, "localsb-devbind", target] + list(argv)
    cmd = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private", "--"] + argv
    if log is not None:
        log.write(f"\n$ {' '.join(argv)}\n")
        log.flush()
    p = subprocess.run(cmd, input=input, stdout=subprocess.PIPE if capture else log,
                       stderr=log if log is not None else subprocess.DEVNULL,
                       env=env if env is not None else {"PATH": CHROOT_PATH, "LANG": "C.UTF-8"},
                       preexec_fn=_die_with_parent, cwd="/")
    if p.returncode != 0:
        how = f"killed by signal {-p.returncode}" if p.returncode < 0 else f"exit {p.returncode}"
        detail = _tail(log)
        raise BuildFailed(f"{what} failed ({how})" + (f": {detail}" if detail else "")
                          + (f"; full log: {log.name}" if getattr(log, "name", None) else ""))
    return p.stdout.decode(errors="replace") if capture else ""


def chroot_run(target: str, argv: list, log, *, capture: bool = False, what: str = "build step") -> str:
    """chroot(2) into ``target`` with /proc and the basic device nodes mounted (private mount and PID
    namespaces, host netns, `env -i`) and run argv."""
    _ensure_resolv_file(target)
    return run_isolated(["sh", "-c", _CHROOT_SH, "localsb-chroot", target] + list(argv), log,
                        capture=capture, what=what, target=target)


def _ensure_resolv_file(target: str) -> None:
    """A regular /etc/resolv.conf in the target, so that the host's can be bound over it."""
    p = os.path.join(target, "etc/resolv.conf")
    if os.path.islink(p) or not os.path.exists(p):
        if os.path.lexists(p):
            os.unlink(p)
        with open(p, "w") as fh:
            fh.write("nameserver 127.0.0.1\n")


# building ----------------------------------------------------------------------------------------
def require_tools(*tools: str) -> None:
    for tool, pkg in (("debootstrap", "debootstrap"), ("npm", "npm"), ("unshare", "util-linux"),
                      ("chroot", "coreutils")):
        if tool in tools and shutil.which(tool) is None:
            raise HostError(f"{tool} is not installed on this machine: apt-get install -y {pkg}")


def debootstrap(target: str, suite: str, mirror: str, log, *, include: tuple = ()) -> None:
    """debootstrap(8) --variant=minbase in two stages: download and unpack on the host, then the
    second stage inside the target with dpkg's unsafe-io (no fsync per file: about a third faster,
    and a crash mid-build throws the image away anyway)."""
    require_tools("debootstrap", "unshare", "chroot")
    os.makedirs(target, exist_ok=True)
    argv = ["debootstrap", "--foreign", "--variant=minbase", "--merged-usr"]
    if include:
        argv.append("--include=" + ",".join(include))
    if os.path.exists(KEYRING):
        argv.append("--keyring=" + KEYRING)
    run_isolated(argv + [suite, target, mirror], log, what=f"debootstrap {suite} (download)", target=target)
    cfg = os.path.join(target, "etc/dpkg/dpkg.cfg.d")
    os.makedirs(cfg, exist_ok=True)
    with open(os.path.join(cfg, "localsb-unsafe-io"), "w") as fh:
        fh.write("force-unsafe-io\n")
    chroot_run(target, ["/debootstrap/debootstrap", "--second-stage"], log, what=f"debootstrap {suite} (install)")
    os.unlink(os.path.join(cfg, "localsb-unsafe-io"))


def write_apt_config(target: str, suite: str, archive: str, security: str | None, *,
                     check_valid_until: bool = True) -> None:
    """The image's own apt sources (deb822, the machine's mirror) and apt/dpkg settings for images:
    no recommends, no translations, no daemons started by package scripts (policy-rc.d)."""
    apt = os.path.join(target, "etc/apt")
    legacy = os.path.join(apt, "sources.list")
    if os.path.exists(legacy):
        os.unlink(legacy)
    os.makedirs(os.path.join(apt, "sources.list.d"), exist_ok=True)
    signed = f"Signed-By: {KEYRING}\n" if os.path.exists(os.path.join(target, KEYRING.lstrip("/"))) else ""
    suites = [suite] if suite in ("sid", "unstable") else [suite, f"{suite}-updates"]
    text = f"Types: deb\nURIs: {archive}\nSuites: {' '.join(suites)}\nComponents: main\n{signed}"
    if security and suite not in ("sid", "unstable"):
        text += f"\nTypes: deb\nURIs: {security}\nSuites: {suite}-security\nComponents: main\n{signed}"
    with open(os.path.join(apt, "sources.list.d/debian.sources"), "w") as fh:
        fh.write(text)
    conf = ["APT::Install-Recommends \"false\";", "APT::Install-Suggests \"false\";",
            "Acquire::Languages \"none\";", "APT::Keep-Downloaded-Packages \"false\";"]
    if not check_valid_until:
        # sid's Release file on a snapshot-style mirror can be past its Valid-Until date
        conf += ["Acquire::Check-Valid-Until \"false\";", "Acquire::Check-Date \"false\";"]
    os.makedirs(os.path.join(apt, "apt.conf.d"), exist_ok=True)
    with open(os.path.join(apt, "apt.conf.d/90localsb"), "w") as fh:
        fh.write("\n".join(conf) + "\n")
    rc = os.path.join(target, "usr/sbin/policy-rc.d")
    with open(rc, "w") as fh:
        fh.write("#!/bin/sh\n# localsb: package scripts never start daemons in an image build\nexit 101\n")
    os.chmod(rc, 0o755)


def install_host_cas(target: str, log) -> int:
    """Copy the host's local CA certificates (/usr/local/share/ca-certificates, the egress proxy's
    among them) into the target and run update-ca-certificates there, so TLS inside works.
    Returns how many were copied."""
    n = 0
    dst = os.path.join(target, HOST_CA_DIR.lstrip("/"))
    os.makedirs(dst, exist_ok=True)
    for src in sorted(glob.glob(os.path.join(HOST_CA_DIR, "**/*.crt"), recursive=True)):
        shutil.copy2(src, os.path.join(dst, os.path.basename(src)))
        n += 1
    if os.path.exists(os.path.join(target, "usr/sbin/update-ca-certificates")):
        chroot_run(target, ["update-ca-certificates", "--fresh"], log, what="update-ca-certificates")
    return n


def add_user(target: str, log, name: str = "agentuity", uid: int = 1000) -> None:
    """useradd(8) in the target: the sandbox's user, with /home/<name> owned by it."""
    with open(os.path.join(target, "etc/passwd")) as fh:
        present = any(line.split(":", 1)[0] == name for line in fh)
    if not present:
        chroot_run(target, ["useradd", "--uid", str(uid), "--user-group", "--create-home",
                            "--shell", "/bin/bash", name], log, what=f"useradd {name}")
    home = os.path.join(target, "home", name)
    os.makedirs(home, exist_ok=True)
    os.chown(home, uid, uid)
    os.chmod(home, 0o755)


def write_identity(target: str, hostname: str = "sandbox") -> None:
    """hostname, hosts and a loopback-only resolv.conf of the image's own (never the host's)."""
    etc = os.path.join(target, "etc")
    with open(os.path.join(etc, "hostname"), "w") as fh:
        fh.write(hostname + "\n")
    with open(os.path.join(etc, "hosts"), "w") as fh:
        fh.write("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    p = os.path.join(etc, "resolv.conf")
    if os.path.lexists(p):
        os.unlink(p)
    with open(p, "w") as fh:
        # No network by default: a resolver that answers nothing rather than the host's.
        fh.write("nameserver 127.0.0.1\n")


def clean(target: str, log) -> None:
    """apt-get clean and drop what a build leaves that no sandbox needs (the apt lists stay: they
    make the next dependency install an If-Modified-Since check instead of a full download)."""
    if os.path.exists(os.path.join(target, "usr/bin/apt-get")):
        chroot_run(target, ["apt-get", "clean"], log, what="apt-get clean")
    for rel in ("debootstrap", "var/log/bootstrap.log", "var/cache/debconf/templates.dat-old",
                "var/cache/debconf/config.dat-old", "var/lib/dpkg/status-old"):
        p = os.path.join(target, rel)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.lexists(p):
            os.unlink(p)
    for d in ("tmp", "var/tmp"):
        p = os.path.join(target, d)
        for entry in os.listdir(p) if os.path.isdir(p) else ():
            q = os.path.join(p, entry)
            if os.path.isdir(q) and not os.path.islink(q):
                shutil.rmtree(q, ignore_errors=True)
            else:
                os.unlink(q)


# apt packages ------------------------------------------------------------------------------------
_UNKNOWN = (re.compile(r"Unable to locate package (\S+)"),
            re.compile(r"Couldn't find any package by (?:glob|regex) '([^']+)'"),
            re.compile(r"Package '([^']+)' has no installation candidate"),
            re.compile(r"Package (\S+) is not available"))
_BAD_VERSION = re.compile(r"Version '([^']+)' for '([^']+)' was not found")


def unknown_package_error(output: str) -> ValidationError | None:
    """The ValidationError that names a package apt-get could not find, from its output."""
    m = _BAD_VERSION.search(output)
    if m:
        return ValidationError(f"Unknown apt package version: {m.group(2)}={m.group(1)}", package=m.group(2))
    for rx in _UNKNOWN:
        m = rx.search(output)
        if m:
            return ValidationError(f"Unknown apt package: {m.group(1)}", package=m.group(1))
    return None


def apt_update(target: str, log) -> None:
    chroot_run(target, APT_GET + ["update"], log, what="apt-get update")


def apt_install(target: str, packages: list, log, *, update: bool = True) -> None:
    """apt-get install into the target (chroot, host netns). Every name is first checked against
    the target's package index (apt-cache pkgnames): apt-get would otherwise read an unknown name
    with a dot as a regular expression and install whatever it matches. ValidationError naming
    the first unknown package."""
    if update:
        apt_update(target, log)
    known = set(chroot_run(target, ["apt-cache", "pkgnames", "--all-names"], log, capture=True,
                           what="apt-cache pkgnames").split())
    for pkg in packages:
        name = pkg.split("=", 1)[0]
        if name not in known:
            raise ValidationError(f"Unknown apt package: {name}", package=name)
    try:
        chroot_run(target, APT_GET + ["install", "--no-install-recommends", "--"] + list(packages), log,
                   what="apt-get install " + " ".join(packages))
    except BuildFailed as e:
        try:
            with open(log.name, errors="replace") as fh:
                fh.seek(max(0, os.path.getsize(log.name) - 65536))
                bad = unknown_package_error(fh.read())
        except (OSError, AttributeError):
            bad = None
        raise (bad or e) from None


# npm ---------------------------------------------------------------------------------------------
def npm_registry() -> str:
    """The npm registry the host's npm uses (LOCALSB_NPM_REGISTRY overrides it)."""
    reg = os.environ.get("LOCALSB_NPM_REGISTRY")
    if reg:
        return reg.rstrip("/") + "/"
    if shutil.which("npm"):
        p = subprocess.run(["npm", "config", "get", "registry"], capture_output=True, text=True, timeout=60)
        if p.returncode == 0 and p.stdout.strip().startswith("http"):
            return p.stdout.strip().rstrip("/") + "/"
    return "https://registry.npmjs.org/"


def npm_pack_file(spec: str, member: str, dest: str, log, *, registry: str | None = None,
                  workdir: str | None = None) -> str:
    """`npm pack SPEC` with the host's npm (its registry, CA and proxy configuration; npm checks
    the tarball's integrity), then extract one member of the package to ``dest`` (mode 0755).
    Returns the packed file's name (it carries the version)."""
    require_tools("npm")
    with tempfile.TemporaryDirectory(prefix="localsb-npm-", dir=workdir) as tmp:
        argv = ["npm", "pack", spec, "--pack-destination", tmp, "--silent"]
        if registry:
            argv += ["--registry", registry]
        log.write(f"\n$ {' '.join(argv)}\n")
        log.flush()
        p = subprocess.run(argv, cwd=tmp, stdout=subprocess.PIPE, stderr=log, preexec_fn=_die_with_parent,
                           env=dict(os.environ, npm_config_update_notifier="false", npm_config_fund="false"))
        if p.returncode != 0:
            raise BuildFailed(f"npm pack {spec} failed (exit {p.returncode}): {_tail(log)}")
        tgz = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
        if not tgz:
            raise BuildFailed(f"npm pack {spec} produced no tarball")
        with tarfile.open(os.path.join(tmp, tgz[0])) as tf:
            try:
                info = tf.getmember(member)
            except KeyError:
                raise BuildFailed(f"npm package {spec} has no {member}") from None
            src = tf.extractfile(info)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest + ".part", "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        os.chmod(dest + ".part", 0o755)
        os.replace(dest + ".part", dest)
        return tgz[0]
