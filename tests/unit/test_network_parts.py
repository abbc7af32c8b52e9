"""Issue 8, the parts that need no root: URL labels, the gateway's routing by host name, public
key parsing and fingerprints, /30 overlap, the nftables ruleset's shape, gateway need."""
from __future__ import annotations

import json
import time

import pytest

from localsb.api import errors as E
from localsb.engine import network
from localsb.engine.gateway import HttpGateway, http_gateway
from localsb.engine.sshgw import fingerprint, parse_public_keys
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
    rules = network._ruleset("localsb_ab12cd34", "lsbab12cd34", "169.254.64.1", Eg)
    assert "type nat hook prerouting" in rules and "forward" not in rules
    assert 'iifname "lsbab12cd34" udp dport 53 redirect to :2222' in rules
    assert 'iifname "lsbab12cd34" meta l4proto tcp redirect to :1111' in rules
    assert "169.254.0.0/16" in rules and "fib daddr type local" in rules and ":3333" in rules
    assert rules.rstrip().endswith("}") and 'iifname "lsbab12cd34" drop' in rules


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
