"""Network namespaces, veth links, addresses, routes and nftables rules, without any helper binary.

Everything talks to the kernel directly: rtnetlink (an AF_NETLINK/NETLINK_ROUTE socket) for links,
addresses and routes, setns(2) on a thread for work inside another network namespace (the network
namespace is per thread, so the rest of the process stays where it is), /proc/sys for the
per-interface sysctls, and libnftables (nftables' own library, through ctypes) for rules. A
pyroute2 import alone costs 100-250 ms and `ip`/`nft` cost a process each (~10 ms for nft), which
would eat the whole budget of a `create --network`.

Nothing here knows about sandboxes: names, addresses and rules come from the caller.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct
import subprocess
import threading

from . import syscalls as sc

# linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/veth.h
NETLINK_ROUTE = 0
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE = 24
IFLA_IFNAME = 3
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_DST = 1
RTA_GATEWAY = 5
RTA_OIF = 4
IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h: the destination a connection had before NAT

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")


def _attr(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _attr_str(kind: int, text: str) -> bytes:
    return _attr(kind, text.encode() + b"\0")


def _attrs(data: bytes) -> dict:
    out, pos = {}, 0
    while pos + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, pos)
        if length < _RTATTR.size:
            break
        out.setdefault(kind & 0x3FFF, data[pos + _RTATTR.size:pos + length])
        pos += (length + 3) & ~3
    return out


class RtNetlink:
    """An rtnetlink socket; it works on the network namespace it was created in, from any thread."""

    def __init__(self, sock: socket.socket | None = None):
        self.sock = sock or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, msg_type: int, flags: int, body: bytes) -> list:
        """Send one request; return the (type, payload) of every answer; raise OSError on a NACK."""
        self.seq += 1
        seq = self.seq
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags | NLM_F_REQUEST, seq, 0) + body)
        answers = []
        while True:
            data = self.sock.recv(1 << 16)
            pos = 0
            while pos + _NLMSGHDR.size <= len(data):
                length, kind, _, rseq, _ = _NLMSGHDR.unpack_from(data, pos)
                payload = data[pos + _NLMSGHDR.size:pos + length]
                pos += (length + 3) & ~3
                if rseq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise OSError(code, f"rtnetlink: {os.strerror(code)}")
                    return answers
                if kind == NLMSG_DONE:
                    return answers
                answers.append((kind, payload))
                if not flags & NLM_F_DUMP and not flags & NLM_F_ACK:
                    return answers

    # links ---------------------------------------------------------------------------------------
    def veth_add(self, name: str, peer: str, peer_netns_fd: int) -> None:
        """RTM_NEWLINK kind veth: ``name`` here, its peer ``peer`` created directly in the network
        namespace behind ``peer_netns_fd`` (so it is never visible in ours)."""
        peer_info = _IFINFOMSG.pack(0, 0, 0, 0, 0) + _attr_str(IFLA_IFNAME, peer) + \
            _attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
        linkinfo = _attr_str(IFLA_INFO_KIND, "veth") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_info))
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + _attr_str(IFLA_IFNAME, name) + _attr(IFLA_LINKINFO, linkinfo)
        self.request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def link_index(self, name: str) -> int:
        """RTM_GETLINK by name -> ifindex (OSError ENODEV when there is none)."""
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + _attr_str(IFLA_IFNAME, name)
        for kind, payload in self.request(RTM_GETLINK, 0, body):
            if kind == RTM_NEWLINK:
                return _IFINFOMSG.unpack_from(payload)[2]
        raise OSError(errno.ENODEV, f"no link {name}")

    def link_up(self, index: int) -> None:
        """RTM_NEWLINK with IFF_UP in flags and change."""
        self.request(RTM_NEWLINK, NLM_F_ACK, _IFINFOMSG.pack(0, 0, index, IFF_UP, IFF_UP))

    def link_del(self, name: str) -> bool:
        """RTM_DELLINK by name (deleting one end of a veth deletes both); False if it is gone."""
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + _attr_str(IFLA_IFNAME, name)
        try:
            self.request(RTM_DELLINK, NLM_F_ACK, body)
            return True
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return False
            raise

    def link_names(self) -> list:
        """RTM_GETLINK dump -> every interface name of this namespace."""
        names = []
        for kind, payload in self.request(RTM_GETLINK, NLM_F_DUMP, _IFINFOMSG.pack(0, 0, 0, 0, 0)):
            if kind == RTM_NEWLINK:
                name = _attrs(payload[_IFINFOMSG.size:]).get(IFLA_IFNAME)
                if name:
                    names.append(name.rstrip(b"\0").decode())
        return names

    # addresses and routes ------------------------------------------------------------------------
    def addr_add(self, index: int, ip: str, prefixlen: int) -> None:
        """RTM_NEWADDR (IPv4): IFA_LOCAL and IFA_ADDRESS both ``ip`` (a point of a subnet, not p2p)."""
        packed = socket.inet_aton(ip)
        body = _IFADDRMSG.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index) + \
            _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
        self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def ipv4_networks(self) -> list:
        """RTM_GETADDR dump -> [(network as int, prefixlen)] of every IPv4 address of this namespace."""
        nets = []
        for kind, payload in self.request(RTM_GETADDR, NLM_F_DUMP, _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)):
            if kind != RTM_NEWADDR:
                continue
            family, plen, _, _, _ = _IFADDRMSG.unpack_from(payload)
            a = _attrs(payload[_IFADDRMSG.size:])
            addr = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
            if family == socket.AF_INET and addr and len(addr) == 4:
                mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
                nets.append((struct.unpack("!I", addr)[0] & mask, plen))
        return nets

    def route_add_default(self, gateway: str, index: int) -> None:
        """RTM_NEWROUTE 0.0.0.0/0 via ``gateway`` on link ``index`` in the main table."""
        self.route_add("0.0.0.0", 0, gateway, index)

    def route_add(self, dst: str, prefixlen: int, gateway: str, index: int) -> None:
        """RTM_NEWROUTE ``dst``/``prefixlen`` via ``gateway`` on link ``index`` in the main table."""
        body = _RTMSG.pack(socket.AF_INET, prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE,
                           RTN_UNICAST, 0) + _attr(RTA_GATEWAY, socket.inet_aton(gateway)) + \
            _attr(RTA_OIF, struct.pack("=I", index))
        if prefixlen:
            body += _attr(RTA_DST, socket.inet_aton(dst))
        self.request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)


# namespaces --------------------------------------------------------------------------------------
def netns_fd_of(pid: int) -> int:
    """open(2) /proc/<pid>/ns/net: a descriptor that names (and keeps alive) that process's netns."""
    return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def run_in_netns(netns_fd: int, fn, *args):
    """setns(2) (CLONE_NEWNET, which is per thread) into ``netns_fd`` on a fresh thread and call
    ``fn(*args)`` there. Sockets made there keep that namespace; returns fn's result or raises its error."""
    def inside():
        sc.setns(netns_fd, sc.CLONE_NEWNET)
        return fn(*args)
    return _on_fresh_thread(inside, "localsb-netns")


def new_netns() -> int:
    """unshare(CLONE_NEWNET) on a throwaway thread; return a descriptor of the new namespace
    (/proc/thread-self/ns/net). The namespace lives as long as the descriptor or a process in it."""
    def inside():
        sc.unshare(sc.CLONE_NEWNET)
        return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    return _on_fresh_thread(inside, "localsb-netns-new")


def _on_fresh_thread(fn, name: str):
    """fn() on a new thread that ends with it (a per-thread namespace change goes with it);
    returns its result or raises its error here."""
    box = {}

    def body():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=body, name=name, daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


class NetnsSockets:
    """Make sockets inside other network namespaces from an asyncio program or any thread.

    setns(2) into the target (by /proc/<pid>/ns/net), socket(2), setns back to our own namespace:
    the socket keeps the namespace it was made in, so connect() from anywhere reaches the target's
    own loopback. The thread doing it is the caller's: wrap calls in an executor.
    """

    def __init__(self):
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def socket(self, pid: int, family=socket.AF_INET, type_=socket.SOCK_STREAM) -> socket.socket:
        """setns(2) into /proc/<pid>/ns/net, socket(2), setns(2) back, on the calling thread."""
        fd = netns_fd_of(pid)
        try:
            sc.setns(fd, sc.CLONE_NEWNET)
            try:
                return socket.socket(family, type_ | socket.SOCK_CLOEXEC)
            finally:
                sc.setns(self.home, sc.CLONE_NEWNET)
        finally:
            os.close(fd)

    def same_as_ours(self, pid: int) -> bool:
        """stat(2) of /proc/<pid>/ns/net: True when ``pid`` lives in our network namespace (same inode)."""
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == os.fstat(self.home).st_ino
        except OSError:
            return False


def sysctl_write(key: str, value: str) -> None:
    """Write /proc/sys/<key> (dots as slashes for the fixed part); the namespace is the calling thread's."""
    with open("/proc/sys/" + key, "w") as fh:
        fh.write(value)


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """getsockopt(SOL_IP, SO_ORIGINAL_DST): where a redirected (NATed) TCP connection was going."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntoa(raw[4:8]), port


# nftables ----------------------------------------------------------------------------------------
_nft_lock = threading.Lock()
_nft = {"lib": None, "ctx": None, "pid": None, "tried": False}


def _nft_lib():
    if not _nft["tried"]:
        _nft["tried"] = True
        try:
            # the soname first: find_library would run ldconfig (a process, ~5 ms)
            try:
                lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
            except OSError:
                lib = ctypes.CDLL(ctypes.util.find_library("nftables") or "libnftables.so", use_errno=True)
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
            lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
            _nft["lib"] = lib
        except (OSError, AttributeError):
            pass
    return _nft["lib"]


def _nft_ctx():
    lib = _nft_lib()
    if lib is None:
        return None, None
    # A context owns a netlink socket: one made before a fork (a forked supervisor closes every
    # inherited descriptor) must not be used, nor freed (its fd number may be someone else's now).
    if _nft["pid"] != os.getpid():
        ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_error(ctx)
        lib.nft_ctx_buffer_output(ctx)
        _nft["ctx"], _nft["pid"] = ctx, os.getpid()
    return lib, _nft["ctx"]


def nft_available() -> bool:
    if _nft_lib() is not None:
        return True
    from shutil import which
    return which("nft") is not None


def nft(script: str) -> str:
    """libnftables nft_run_cmd_from_buffer (or ``nft -f -`` when the library is missing) on an
    nftables script; return its output; raise OSError with nft's message on failure."""
    lib, ctx = _nft_ctx()
    if lib is not None:
        with _nft_lock:
            rc = lib.nft_run_cmd_from_buffer(ctx, script.encode())
            out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        if rc != 0:
            raise OSError(errno.EINVAL, "nftables: " + (err.strip().splitlines() or ["failed"])[0])
        return out
    p = subprocess.run(["nft", "-f", "-"], input=script.encode(), capture_output=True)
    if p.returncode != 0:
        raise OSError(errno.EINVAL, "nftables: " + (p.stderr.decode(errors="replace").strip().splitlines()
                                                    or ["failed"])[0])
    return p.stdout.decode(errors="replace")


def nft_table_names(family: str = "ip") -> list:
    """nftables ``list tables <family>`` -> the names of those tables."""
    out = nft(f"list tables {family}")
    return [line.split()[-1] for line in out.splitlines() if line.startswith("table ")]


__all__ = ["RtNetlink", "netns_fd_of", "run_in_netns", "new_netns", "NetnsSockets", "sysctl_write",
           "original_dst", "nft", "nft_available", "nft_table_names"]
