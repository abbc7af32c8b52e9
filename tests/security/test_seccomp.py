"""Issue 14, item 4: the seccomp allowlist. Hostile code inside reaches none of the kernel surfaces
that the unprivileged user namespace, io_uring and exotic socket families open, and everyday work
(python, node, git, pip, npm, dpkg, su, chown, port 80, ps, top) still runs.

Each probe is a python3 script run inside a real sandbox with the host's interpreter (the base
runtime is the host's /usr): raw syscalls through ctypes, each printing ``name=result`` where the
result is ``ok``, an errno name, or ``CLONED`` for a clone that made a child. Syscall numbers are
x86_64's.
"""
from __future__ import annotations

import errno
import io
import os
import platform
import shutil
import signal
import textwrap

import pytest

from localsb.api.specs import CreateSpec

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64",
                                reason="the probes use x86_64 syscall numbers")

PRELUDE = r'''
import ctypes, errno, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def _args(args):
    return [ctypes.c_long(a) if isinstance(a, int) else a for a in args]

def call(nr, *args):
    """A raw syscall: 'ok' or the errno's name."""
    r = libc.syscall(ctypes.c_long(nr), *_args(args))
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

def forked(nr, *args):
    """A raw clone-like syscall: a child that would be made exits at once."""
    r = libc.syscall(ctypes.c_long(nr), *_args(args))
    if r == 0:
        os._exit(0)
    if r > 0:
        os.waitpid(r, 0)
        return "CLONED"
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

def sock(family, kind, proto=0):
    try:
        socket.socket(family, kind, proto).close()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def show(name, result):
    print(f"{name}={result}", flush=True)
'''

SIGCHLD = 17
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x2000000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
SYS_clone, SYS_clone3, SYS_unshare, SYS_setns = 56, 435, 272, 308


def run(engine, *cmd, **spec):
    out, err = io.BytesIO(), io.BytesIO()
    r = engine.sandbox_run(CreateSpec(mode="oneshot", command=list(cmd), **spec), None, out, err)
    return r, out.getvalue().decode(errors="replace"), err.getvalue().decode(errors="replace")


def probe(engine, body: str) -> dict:
    """Run PRELUDE + body with python3 inside a sandbox; return its ``name=result`` lines."""
    r, out, err = run(engine, "python3", "-c", PRELUDE + textwrap.dedent(body))
    assert r["exitCode"] == 0, (r, out, err)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def sh(engine, script: str):
    r, out, err = run(engine, "sh", "-c", script)
    assert r["exitCode"] == 0, (r, out, err)
    return out


# --- refused surfaces ----------------------------------------------------------------------------

def test_clone_with_a_new_user_namespace_is_refused(engine):
    # the way into the whole unprivileged-userns surface (nf_tables and friends): refused whatever
    # else comes with it
    got = probe(engine, f"""
        show("newuser", forked({SYS_clone}, {CLONE_NEWUSER | SIGCHLD}, 0, 0, 0, 0))
        show("newuser_newnet", forked({SYS_clone}, {CLONE_NEWUSER | CLONE_NEWNET | SIGCHLD}, 0, 0, 0, 0))
        show("newuser_all", forked({SYS_clone}, {CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID
                                                 | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | SIGCHLD},
                                    0, 0, 0, 0))
    """)
    assert got == {"newuser": "EPERM", "newuser_newnet": "EPERM", "newuser_all": "EPERM"}


def test_clone_with_any_other_new_namespace_is_refused_but_plain_clone_works(engine):
    flags = {"newnet": CLONE_NEWNET, "newns": CLONE_NEWNS, "newpid": CLONE_NEWPID,
             "newipc": CLONE_NEWIPC, "newuts": CLONE_NEWUTS, "newcgroup": CLONE_NEWCGROUP}
    body = "".join(f"show({name!r}, forked({SYS_clone}, {flag | SIGCHLD}, 0, 0, 0, 0))\n"
                   for name, flag in flags.items())
    body += f"show('plain', forked({SYS_clone}, {SIGCHLD}, 0, 0, 0, 0))\n"
    got = probe(engine, body)
    assert got == {**{name: "EPERM" for name in flags}, "plain": "CLONED"}


def test_clone3_answers_enosys(engine):
    # clone3's flags live in memory seccomp cannot read: ENOSYS, so that glibc falls back to clone
    got = probe(engine, f"""
        def clone3(flags):
            args = (ctypes.c_uint64 * 11)()   # struct clone_args, 88 bytes
            args[0] = flags
            args[4] = {SIGCHLD}               # exit_signal
            return forked({SYS_clone3}, ctypes.addressof(args), ctypes.sizeof(args))
        show("newuser", clone3({CLONE_NEWUSER}))
        show("plain", clone3(0))
        import threading, subprocess
        t = threading.Thread(target=lambda: None); t.start(); t.join()
        show("thread_and_spawn", subprocess.run(["true"]).returncode)
    """)
    assert got == {"newuser": "ENOSYS", "plain": "ENOSYS", "thread_and_spawn": "0"}


def test_io_uring_is_refused(engine):
    got = probe(engine, """
        params = ctypes.create_string_buffer(120)  # struct io_uring_params
        show("setup", call(425, 8, params))
        show("enter", call(426, -1, 0, 0, 0, 0, 0))
        show("register", call(427, -1, 0, 0, 0))
    """)
    assert got == {"setup": "EPERM", "enter": "EPERM", "register": "EPERM"}


def test_vsock_socket_is_refused(engine):
    got = probe(engine, """
        show("stream", sock(40, socket.SOCK_STREAM))   # AF_VSOCK
        show("dgram", sock(40, socket.SOCK_DGRAM))
    """)
    assert got == {"stream": "EAFNOSUPPORT", "dgram": "EAFNOSUPPORT"}


def test_netlink_uevent_socket_is_refused(engine):
    got = probe(engine, "show('uevent', sock(socket.AF_NETLINK, socket.SOCK_RAW, 15))\n"
                        "show('uevent_dgram', sock(socket.AF_NETLINK, socket.SOCK_DGRAM, 15))\n")
    assert got == {"uevent": "EPROTONOSUPPORT", "uevent_dgram": "EPROTONOSUPPORT"}


def test_netlink_netfilter_socket_is_refused(engine):
    got = probe(engine, "show('netfilter', sock(socket.AF_NETLINK, socket.SOCK_RAW, 12))\n")
    assert got == {"netfilter": "EPROTONOSUPPORT"}


def test_packet_socket_is_refused_by_the_filter(engine):
    # EAFNOSUPPORT, not the EPERM of a missing CAP_NET_RAW: the filter holds without the capability
    # check (root of a user namespace owns its netns and has CAP_NET_RAW there)
    got = probe(engine, """
        show("raw", sock(17, socket.SOCK_RAW))     # AF_PACKET
        show("dgram", sock(17, socket.SOCK_DGRAM))
    """)
    assert got == {"raw": "EAFNOSUPPORT", "dgram": "EAFNOSUPPORT"}


def test_other_socket_families_and_netlink_protocols_are_refused(engine):
    families = {"ax25": 3, "appletalk": 5, "key": 15, "rds": 21, "llc": 26, "can": 29, "tipc": 30,
                "bluetooth": 31, "alg": 38, "xdp": 44, "mctp": 45}
    body = "".join(f"show({n!r}, sock({f}, socket.SOCK_SEQPACKET))\n" for n, f in families.items())
    body += textwrap.dedent("""
        # high bits over an allowed family: compared on the whole register, never truncated into it
        show("inet_high_bits", call(41, (1 << 32) | socket.AF_INET, socket.SOCK_STREAM, 0))
        for name, proto in (("sock_diag", 4), ("audit", 9), ("generic", 16), ("xfrm", 6)):
            show(name, sock(socket.AF_NETLINK, socket.SOCK_RAW, proto))
        pair = (ctypes.c_int * 2)()
        show("socketpair_inet", call(53, socket.AF_INET, socket.SOCK_STREAM, 0, pair))
        show("socketpair_netlink", call(53, socket.AF_NETLINK, socket.SOCK_RAW, 0, pair))
    """)
    got = probe(engine, body)
    assert got == {**{n: "EAFNOSUPPORT" for n in families}, "inet_high_bits": "EAFNOSUPPORT",
                   "sock_diag": "EPROTONOSUPPORT", "audit": "EPROTONOSUPPORT",
                   "generic": "EPROTONOSUPPORT", "xfrm": "EPROTONOSUPPORT",
                   "socketpair_inet": "EAFNOSUPPORT", "socketpair_netlink": "EAFNOSUPPORT"}


def test_unshare_and_setns_are_still_refused(engine):
    got = probe(engine, f"""
        for name, flag in (("user", {CLONE_NEWUSER}), ("net", {CLONE_NEWNET}), ("mnt", {CLONE_NEWNS}),
                           ("user_net", {CLONE_NEWUSER | CLONE_NEWNET})):
            show("unshare_" + name, call({SYS_unshare}, flag))
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        show("setns", call({SYS_setns}, fd, 0))
    """)
    assert set(got.values()) == {"EPERM"} and len(got) == 5
    if os.path.exists("/usr/bin/unshare"):
        out = sh(engine, "unshare -U -r true 2>/dev/null && echo UNSHARED || echo refused")
        assert out.strip() == "refused"


# Syscalls refused whatever their arguments. The arguments are harmless (null pointers, bad
# descriptors, wrong magic): were one ever let through, the kernel would fail it, not act on it.
KERNEL_SURFACES = {
    "ptrace": (101, 16, 1, 0, 0),                   # PTRACE_ATTACH to PID 1
    "process_vm_readv": (310, 1, 0, 0, 0, 0, 0),
    "process_vm_writev": (311, 1, 0, 0, 0, 0, 0),
    "bpf": (321, 0, 0, 0),
    "perf_event_open": (298, 0, 0, -1, -1, 0),
    "keyctl": (250, 0, 0, 0, 0, 0),
    "add_key": (248, 0, 0, 0, 0, 0),
    "request_key": (249, 0, 0, 0, 0),
    "userfaultfd": (323, 0),
    "kexec_load": (246, 0, 0, 0, 0),
    "kexec_file_load": (320, -1, -1, 0, 0, 0),
    "init_module": (175, 0, 0, 0),
    "finit_module": (313, -1, 0, 0),
    "delete_module": (176, 0, 0),
    "reboot": (169, 0, 0, 0, 0),
    "swapon": (167, 0, 0),
    "swapoff": (168, 0),
    "syslog": (103, 10, 0, 0),                      # SYSLOG_ACTION_SIZE_BUFFER
    "acct": (163, 1),
    "open_by_handle_at": (304, -1, 0, 0),
    "name_to_handle_at": (303, -1, 0, 0, 0, 0),
    "settimeofday": (164, 1, 1),
    "clock_settime": (227, 0, 1),
    "adjtimex": (159, 1),
    "clock_adjtime": (305, 0, 1),
    "iopl": (172, 0),
    "ioperm": (173, 0, 0, 0),
    "quotactl": (179, 0, 0, 0, 0),
    "uselib": (134, 0),
    "vhangup": (153,),
    "fanotify_init": (300, 0, 0),
    "pidfd_getfd": (438, -1, -1, 0),
    "kcmp": (312, 1, 1, 0, 0, 0),
    "mount": (165, 0, 0, 0, 0, 0),
    "umount2": (166, 0, 0),
    "pivot_root": (155, 0, 0),
    "move_mount": (429, -1, 0, -1, 0, 0),
    "open_tree": (428, -1, 0, 0),
    "fsopen": (430, 0, 0),
    "fsconfig": (431, -1, 0, 0, 0, 0),
    "fsmount": (432, -1, 0, 0),
    "fspick": (433, -1, 0, 0),
    "mount_setattr": (442, -1, 0, 0, 0, 0),
    "lookup_dcookie": (212, 0, 0, 0),
    "get_mempolicy": (239, 0, 0, 0, 0, 0),
    "sethostname": (170, 0, 0),
}


def test_kernel_surfaces_stay_refused(engine):
    body = "".join(f"show({name!r}, call(*{args!r}))\n" for name, args in KERNEL_SURFACES.items())
    got = probe(engine, body)
    assert {k: v for k, v in got.items() if v != "EPERM"} == {}
    assert set(got) == set(KERNEL_SURFACES)


def test_personality_allows_only_the_harmless_values(engine):
    got = probe(engine, """
        show("query", call(135, 0xFFFFFFFF))
        show("linux32", call(135, 0x0008))
        show("linux", call(135, 0x0000))
        show("addr_no_randomize", call(135, 0x0040000))
        show("read_implies_exec", call(135, 0x0400000))
    """)
    assert got == {"query": "ok", "linux32": "ok", "linux": "ok", "addr_no_randomize": "EPERM",
                   "read_implies_exec": "EPERM"}


def test_i386_and_x32_syscalls_are_killed(engine):
    got = probe(engine, """
        import subprocess
        x32 = "import ctypes; ctypes.CDLL(None).syscall(0x40000000 | 39)"   # x32 getpid
        i386 = ("import ctypes, mmap; m = mmap.mmap(-1, 4096, prot=7);"
                "m.write(bytes.fromhex('b814000000cd80c3'));"       # mov eax, 20 (getpid); int 0x80; ret
                "ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))()")
        for name, code in (("x32", x32), ("i386", i386)):
            show(name, subprocess.run([sys.executable, "-c", code]).returncode)
    """)
    assert got == {"x32": str(-signal.SIGSYS), "i386": str(-signal.SIGSYS)}


def test_the_filter_alone_refuses_what_host_root_could_do():
    """The policy does not lean on a missing capability or on a user namespace: loaded in a child
    of this test process (host root, every capability), it refuses what that root could do. Only
    probes that would be harmless if they ever got through (a namespace of the child's own, a
    socket opened and closed)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the point is a process that has every capability")
    from localsb.linux import security
    if not security.seccomp_available():
        pytest.skip("pyseccomp or libseccomp is missing")
    import ctypes
    import socket
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            security.load_seccomp()
            got = []
            for flag in (CLONE_NEWNET, CLONE_NEWUSER, CLONE_NEWNS):
                rc = libc.syscall(ctypes.c_long(SYS_unshare), ctypes.c_long(flag))
                got.append(ctypes.get_errno() if rc < 0 else 0)
            for family, kind, proto in ((17, socket.SOCK_RAW, 0), (socket.AF_NETLINK, socket.SOCK_RAW, 15),
                                        (socket.AF_NETLINK, socket.SOCK_RAW, 12)):
                try:
                    socket.socket(family, kind, proto).close()
                    got.append(0)
                except OSError as e:
                    got.append(e.errno)
            os.write(w, " ".join(map(str, got)).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        got = [int(x) for x in fh.read().split()]
    os.waitpid(pid, 0)
    assert got == [errno.EPERM] * 3 + [errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.EPROTONOSUPPORT]


def test_seccomp_info_reports_the_allowlist():
    from localsb.linux import security
    if not security.seccomp_available():
        pytest.skip("pyseccomp or libseccomp is missing")
    info = security.seccomp_info()
    assert info["mode"] == "allowlist" and info["defaultAction"] == "errno EPERM"
    assert info["badArchAction"] == "kill" and info["rules"] > 300 and "ruleErrors" not in info
    assert not set(security.ALLOW_SYSCALLS) & set(security.REFUSED_SYSCALLS)
    assert not {"clone", "clone3", "socket", "socketpair", "personality"} & set(security.ALLOW_SYSCALLS)


def _prepare_in_a_fresh_process(cache_dir: str) -> tuple:
    """prepare() in a new interpreter with CACHE_DIR at ``cache_dir``: (from cache, program hex)."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from localsb.linux import security as s;"
            "s.CACHE_DIR = sys.argv[2]; s.prepare(); print(s._from_cache, s._program_code.raw.hex())")
    p = subprocess.run([sys.executable, "-c", code, root, cache_dir], capture_output=True, text=True,
                       check=True)
    cached, program = p.stdout.split()
    return cached == "True", program


def test_compiled_filter_is_cached_only_where_root_alone_writes(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the cache is root's only")
    from localsb.linux import security
    if not security.seccomp_available():
        pytest.skip("pyseccomp or libseccomp is missing")
    cache = tmp_path / "seccomp"
    built, program = _prepare_in_a_fresh_process(str(cache))
    assert not built and (cache.stat().st_mode & 0o777) == 0o700
    [entry] = list(cache.iterdir())
    assert entry.stat().st_mode & 0o777 == 0o600
    assert _prepare_in_a_fresh_process(str(cache)) == (True, program)   # read back, same program
    # a file others could have written is not used (and is replaced by a fresh one)
    entry.chmod(0o666)
    assert _prepare_in_a_fresh_process(str(cache)) == (False, program)
    assert entry.stat().st_mode & 0o777 == 0o600
    os.chown(entry, 65534, 65534)
    assert _prepare_in_a_fresh_process(str(cache)) == (False, program)
    # nor one with a torn program, nor one in a directory others can write
    entry.write_bytes(entry.read_bytes()[:-3])
    assert _prepare_in_a_fresh_process(str(cache)) == (False, program)
    cache.chmod(0o777)
    assert _prepare_in_a_fresh_process(str(cache)) == (False, program)


# --- everyday work still runs --------------------------------------------------------------------

PY_WORK = r'''
import asyncio, concurrent.futures, multiprocessing as mp, subprocess, threading

def square(x):
    return x * x

async def echo():
    p = await asyncio.create_subprocess_exec("echo", "async", stdout=asyncio.subprocess.PIPE)
    out, _ = await p.communicate()
    return out.decode().strip()

if __name__ == "__main__":
    t = threading.Thread(target=print, args=("thread",)); t.start(); t.join()
    print(subprocess.run(["sh", "-c", "echo subprocess"], capture_output=True, text=True).stdout.strip())
    for method in ("fork", "spawn", "forkserver"):
        with mp.get_context(method).Pool(2) as pool:
            print(method, sum(pool.map(square, range(5))))
    q = mp.Queue(); q.put("queue"); print(q.get())
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        print("threads", sum(ex.map(square, range(5))))
    print(asyncio.run(echo()))
'''


def test_python_threads_subprocess_multiprocessing_asyncio(engine):
    out = sh(engine, f"cat > work.py <<'EOF'\n{PY_WORK}\nEOF\npython3 work.py")
    assert out.split("\n")[:-1] == ["thread", "subprocess", "fork 30", "spawn 30", "forkserver 30", "queue",
                                    "threads 30", "async"]


def test_port_80_binds_and_answers(engine):
    got = probe(engine, """
        for name, fam, host in (("v4", socket.AF_INET, "127.0.0.1"), ("v6", socket.AF_INET6, "::1")):
            s = socket.socket(fam); s.bind((host, 80)); s.listen()
            c = socket.create_connection((host, 80)); a, _ = s.accept(); c.sendall(b"hi")
            show(name, a.recv(2).decode())
            for x in (a, c, s): x.close()
        u = socket.socketpair(); u[0].send(b"u"); show("socketpair", u[1].recv(1).decode())
    """)
    assert got == {"v4": "hi", "v6": "hi", "socketpair": "u"}


def test_netlink_route_socket_works(engine):
    got = probe(engine, """
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); s.bind((0, 0)); s.close()
        show("if_nameindex", ",".join(name for _, name in socket.if_nameindex()))
        show("addrconfig", len(socket.getaddrinfo("localhost", 80, flags=socket.AI_ADDRCONFIG)) > 0)
    """)
    assert got == {"if_nameindex": "lo", "addrconfig": "True"}
    if shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin"):
        assert "127.0.0.1/8" in sh(engine, "ip -o addr show lo")


def test_chown_and_setuid_bit(engine):
    out = sh(engine, "touch f; chown 1000:1000 f; chmod 4755 f; stat -c '%u %g %A' f")
    assert out.strip() == "1000 1000 -rwsr-xr-x"


def test_su_runs_a_command_as_agentuity(engine):
    if not os.path.exists("/usr/bin/su"):
        pytest.skip("no su on this host (the base runtime is the host's /usr)")
    # The base runtime's /etc has no PAM configuration; root gives su a minimal one. What this
    # holds for seccomp: libpam opens a NETLINK_AUDIT socket, and fails su when that gets EPERM.
    out = sh(engine, "mkdir -p /etc/pam.d; printf 'auth sufficient pam_rootok.so\\naccount required "
                     "pam_permit.so\\nsession required pam_permit.so\\n' > /etc/pam.d/su; su agentuity -c id")
    assert out.startswith("uid=1000(agentuity) gid=1000(agentuity)")


def test_ps_and_top(engine):
    out = sh(engine, "ps -e -o pid=,comm=; top -b -n 1 | head -2")
    assert "1 " in out and "ps" in out and "top -" in out and "Tasks:" in out


def test_git_and_pip_install_of_a_local_package(engine):
    out = sh(engine, textwrap.dedent("""\
        git init -q repo && cd repo && echo a > a && git add a
        git -c user.email=a@example.invalid -c user.name=a commit -qm first && git log --oneline | wc -l
        cd .. && mkdir -p pkg/lsbpkg && echo 'X = 41' > pkg/lsbpkg/__init__.py
        printf 'from setuptools import setup\\nsetup(name="lsbpkg", version="0.1", packages=["lsbpkg"])\\n' > pkg/setup.py
        python3 -m pip install -q --no-index --no-build-isolation --no-cache-dir --target site ./pkg 2>/dev/null
        PYTHONPATH=site python3 -c 'import lsbpkg; print(lsbpkg.X + 1)'
    """))
    assert out.split() == ["1", "42"]


def test_node_and_npm_install_of_a_local_package(engine):
    if not (os.path.exists("/usr/bin/node") and os.path.exists("/usr/bin/npm")):
        pytest.skip("no node or npm on this host (the base runtime is the host's /usr)")
    out = sh(engine, textwrap.dedent("""\
        mkdir -p lib app && echo '{"name":"lsblib","version":"1.0.0","main":"i.js"}' > lib/package.json
        echo 'module.exports = 7' > lib/i.js && cd app && echo '{"name":"app","version":"1.0.0"}' > package.json
        npm install --offline --no-audit --no-fund ../lib >/dev/null 2>&1
        node -e 'const {Worker} = require("worker_threads");
          console.log(require("lsblib"), require("child_process").execSync("echo child").toString().trim());
          new Worker("require(\\"worker_threads\\").parentPort.postMessage(42)", {eval: true})
            .on("message", m => console.log("worker", m))'
    """))
    assert out.split("\n")[:-1] == ["7 child", "worker 42"]


def test_dpkg_installs_a_local_package_as_root(engine):
    if not os.path.exists("/usr/bin/dpkg-deb"):
        pytest.skip("no dpkg on this host (the base runtime is the host's /usr)")
    out = sh(engine, textwrap.dedent("""\
        mkdir -p deb/DEBIAN deb/opt/lsb && echo hello > deb/opt/lsb/f
        printf 'Package: lsb-hello\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: a <a@example.invalid>\\nDescription: t\\n' > deb/DEBIAN/control
        printf '#!/bin/sh\\nchown 1000 /opt/lsb/f\\n' > deb/DEBIAN/postinst && chmod 755 deb/DEBIAN/postinst
        dpkg-deb -b deb lsb.deb >/dev/null
        mkdir -p /var/lib/dpkg/updates /var/lib/dpkg/info && touch /var/lib/dpkg/status
        dpkg -i lsb.deb >/dev/null && stat -c '%u' /opt/lsb/f && dpkg-query -W -f '${Status}\\n' lsb-hello
    """))
    assert out.split("\n")[:-1] == ["1000", "install ok installed"]
