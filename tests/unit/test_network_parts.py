"""Issue 8, the parts that need no root: URL labels, the gateway's routing by host name, public
key parsing and fingerprints, /30 overlap, the nftables ruleset's shape, gateway need."""
from __future__ import annotations

import json
import time

import pytest

from localsb.api import errors as E
from localsb.engine import network
from localsb.engine.gateway import HttpGateway, http_gateway
from localsb.engine.sshkeys import fingerprint, parse_public_keys
from localsb.engine.store import Store

ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBDg8SRh+BHaj+qa2qef9tp5PY9ELQUH0Dmtcf0wHpqe vector@test")
ED25519_FP = "SHA256:i5OXaaWdHtg4an0PX75qmjvVmJBzhhLDK94IgSoJY7g"   # ssh-keygen -lf


def row(sid, name=None, status="idle", port=3000, init_pid=None):
    t = time.time()
    return {"id": sid, "org_id": "org_local", "name": name, "mode": "interactive", "status": status,
            "spec": json.dumps({"port": port, "network": bool(port)}), "env": "{}", "created_at": t,
            "updated_at": t, "last_activity": t, "init_pid": init_pid}


def test_url_label_is_name_dash_identifier_and_dns_safe():
    assert network.url_label({"id": "sbx_abc123xyz456", "name": "My Web_App!"}) == "my-web-app-abc123xyz456"
    assert network.url_label({"id": "sbx_abc123xyz456", "name": None}) == "abc123xyz456"
    assert network.url_label({"id": "sbx_abc123xyz456", "name": "--"}) == "abc123xyz456"
    long = network.url_label({"id": "sbx_abc123xyz456", "name": "x" * 100})
    assert len(long) <= 63 and long.endswith("-abc123xyz456")


def test_public_keys_parse_with_openssh_fingerprints():
    [k] = parse_public_keys(f"# a comment\n\nfrom=\"10.0.0.1\" {ED25519}\n")
    assert (k["type"], k["comment"], k["fingerprint"]) == ("ssh-ed25519", "vector@test", ED25519_FP)
    import base64
    assert fingerprint(base64.b64decode(ED25519.split()[1])) == ED25519_FP
    two = parse_public_keys(ED25519 + "\n" + ED25519.replace("vector@test", "again"))
    assert [x["comment"] for x in two] == ["vector@test", "again"]
    for bad, msg in (("", "No public key found"), ("ssh-ed25519", "not an OpenSSH public key"),
                     ("ssh-ed25519 !!!notbase64", "not valid base64"),
                     ("ssh-rsa " + ED25519.split()[1], "is a ssh-ed25519 key, not ssh-rsa"),
                     ("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n", "private key")):
        with pytest.raises(E.ValidationError, match=msg):
            parse_public_keys(bad)


def test_link_slots_overlap():
    base = network.LINK_BASE
    assert network._overlaps(base, 30, base + 2, 30)
    assert not network._overlaps(base, 30, base + 4, 30)
    assert network._overlaps(base + 8, 30, (169 << 24) | (254 << 16), 16)   # a host 169.254/16
    assert network._ip(base + 1) == "169.254.64.1"


def test_ruleset_redirects_without_forwarding_and_closes_the_host():
    class Eg:
        tcp_port, dns_port, refuse_port = 1111, 2222, 3333
    lan = [network._parse_net("192.0.2.0/24")]
    rules = network._ruleset("localsb_ab12cd34", "lsbab12cd34", "169.254.64.1", "169.254.64.2", Eg,
                             network.EgressPolicy(), lan)
    assert "type nat hook prerouting" in rules and "forward" not in rules
    assert 'iifname "lsbab12cd34" ip saddr != 169.254.64.2 drop' in rules     # no spoofed source
    assert 'iifname "lsbab12cd34" udp dport 53 redirect to :2222' in rules
    assert 'iifname "lsbab12cd34" meta l4proto tcp redirect to :1111' in rules
    assert "169.254.64.0/18" in rules and "fib daddr type local" in rules and ":3333" in rules
    # private, shared, link-local and the host's own network: to the refusing port
    refused = [x for x in rules.splitlines() if "192.168.0.0/16" in x]
    assert len(refused) == 1 and refused[0].endswith("redirect to :3333")
    for net in ("10.0.0.0/8", "172.16.0.0/12", "100.64.0.0/10", "169.254.0.0/16", "192.0.2.0/24"):
        assert net in refused[0]
    # the host end is closed: only the redirected flows come in
    assert "ip daddr 169.254.64.1 accept" not in rules and "ip daddr 169.254.64.1 return" not in rules
    assert 'ip daddr 169.254.64.1 tcp dport { 1111, 3333 } ct status dnat accept' in rules
    assert 'ip daddr 169.254.64.1 udp dport 2222 ct status dnat accept' in rules
    assert rules.rstrip().endswith("}") and 'iifname "lsbab12cd34" drop' in rules
    opened = network._ruleset("localsb_ab12cd34", "lsbab12cd34", "169.254.64.1", "169.254.64.2", Eg,
                              network.EgressPolicy.from_env({"LOCALSB_NETWORK_ALLOW": "host,10.1.0.0/16"}), lan)
    assert 'iifname "lsbab12cd34" ip daddr 169.254.64.1 accept' in opened
    lines = opened.splitlines()
    allowed = [i for i, x in enumerate(lines) if "{ 10.1.0.0/16 }" in x]
    assert allowed and lines[allowed[0]].endswith("redirect to :1111")
    assert allowed[0] < [i for i, x in enumerate(lines) if "192.168.0.0/16" in x][0]   # before the refusal
    assert allowed[0] > [i for i, x in enumerate(lines) if "169.254.64.0/18" in x][0]  # after the never-list


def test_egress_policy_reads_the_explicit_opt_in():
    P = network.EgressPolicy.from_env
    assert P({}).describe() == [] and not P({}).host
    assert P({"LOCALSB_NETWORK_ALLOW": " host , 10.1.2.3,10.1.0.0/16"}).describe() == ["host", "10.1.0.0/16"]
    assert P({"LOCALSB_NETWORK_ALLOW": "private"}).describe() == [
        "10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16"]   # link-local only by name
    assert P({"LOCALSB_NETWORK_ALLOW": "192.168.1.77/24"}).describe() == ["192.168.1.0/24"]
    for bad in ("yes", "10.1", "10.0.0.0/33", "10.0.0.0/", "fc00::/7", "10.0.0.0/-1"):
        with pytest.raises(E.ValidationError, match="LOCALSB_NETWORK_ALLOW"):
            P({"LOCALSB_NETWORK_ALLOW": bad})


def test_relay_refuses_private_shared_link_local_and_host_destinations():
    """The relay's own check (defence in depth behind the nft rules)."""
    lan = [network._parse_net("192.0.2.0/24")]
    refused = ["0.1.2.3", "127.0.0.1", "127.9.9.9", "169.254.64.1", "169.254.169.254", "10.0.0.1",
               "10.255.255.254", "172.16.0.1", "172.31.255.1", "192.168.1.1", "100.64.0.1",
               "100.127.255.254", "224.0.0.1", "239.1.1.1", "240.0.0.1", "255.255.255.255", "192.0.2.1",
               "fc00::1", "fd12::1", "fe80::1", "::1", "::ffff:10.0.0.1"]
    for ip in refused:
        assert network._refused_destination(ip, network.EgressPolicy(), lan), ip
    for ip in ("198.51.100.7", "172.32.0.1", "100.128.0.1", "11.0.0.1", "192.169.0.1", "2606:4700::1111"):
        assert not network._refused_destination(ip, network.EgressPolicy(), lan), ip
    allow = network.EgressPolicy.from_env({"LOCALSB_NETWORK_ALLOW": "10.1.0.0/16,192.0.2.0/24,0.0.0.0/0"})
    assert not network._refused_destination("10.1.2.3", allow, lan)
    assert not network._refused_destination("192.0.2.1", allow, lan)
    assert not network._refused_destination("169.254.169.254", allow, lan)   # 0.0.0.0/0 says so
    for ip in ("127.0.0.1", "169.254.64.5", "0.0.0.1", "224.0.0.1"):                # never, whatever
        assert network._refused_destination(ip, allow, lan), ip
    assert network._refused_destination("127.0.0.1", None, lan)


def test_dns_forwarder_forwards_only_queries():
    q = bytes.fromhex("1234 0100 0001 0000 0000 0000 03 77 77 77 00 0001 0001".replace(" ", ""))
    assert network._is_query(q)
    assert not network._is_query(q[:12])                          # no question
    assert not network._is_query(q[:2] + b"\x81\x80" + q[4:])      # an answer (QR set)
    assert not network._is_query(q[:2] + b"\x28\x00" + q[4:])      # opcode UPDATE
    assert not network._is_query(q[:4] + b"\x00\x02" + q[6:])      # two questions
    assert not network._is_query(b"x" * 40)


def test_gateway_routes_by_host_label_or_header(tmp_path):
    store = Store(str(tmp_path / "state.db"))
    for r in (row("sbx_aaaaaaaaaaaa", "web"), row("sbx_bbbbbbbbbbbb"), row("sbx_cccccccccccc", status="deleted"),
              row("sbx_dddddddddddd", port=None)):
        store.insert("sandboxes", r)
    store.close()
    import socket
    gw = HttpGateway(str(tmp_path), socket.socket())
    try:
        def route(**headers):
            r = gw.route({k.replace("_", "-"): v for k, v in headers.items()})
            return r["id"] if r else None
        assert route(host="web-aaaaaaaaaaaa.localhost:18888") == "sbx_aaaaaaaaaaaa"
        assert route(host="WEB-AAAAAAAAAAAA.LOCALHOST") == "sbx_aaaaaaaaaaaa"
        assert route(host="bbbbbbbbbbbb.localhost:1") == "sbx_bbbbbbbbbbbb"
        assert route(host="cccccccccccc.localhost") is None        # deleted
        assert route(host="dddddddddddd.localhost") is None        # no port
        assert route(host="zzzzzzzzzzzz.localhost") is None
        assert route(host="127.0.0.1:18888") is None
        assert route(host="localhost:18888", x_localsb_sandbox="sbx_bbbbbbbbbbbb") == "sbx_bbbbbbbbbbbb"
        assert route(host="127.0.0.1", x_localsb_sandbox="aaaaaaaaaaaa") == "sbx_aaaaaaaaaaaa"
        d = http_gateway(str(tmp_path))
        assert d.needed(gw.store) and d.needed(gw.store, exclude="sbx_bbbbbbbbbbbb")
        gw.store.run("UPDATE sandboxes SET status='terminated' WHERE id='sbx_aaaaaaaaaaaa'")
        assert d.needed(gw.store) and not d.needed(gw.store, exclude="sbx_bbbbbbbbbbbb")
    finally:
        gw.store.close()
