"""Runtimes without root or network: the catalogue and its recipes, the machine's apt sources,
apt's error messages, reachability checks against loopback, and the image build protocol
(temporary name, atomic rename, stale leftovers, cached dependency layers) on the overlay
(plain directory) storage driver with the package-manager steps replaced."""
from __future__ import annotations

import http.server
import io
import json
import os
import socket
import threading
import time

import pytest

from localsb.api import errors as E
from localsb.engine import images, runtimes
from localsb.linux import debootstrap as D
from localsb.linux import storage


# catalogue ---------------------------------------------------------------------------------------
def test_catalogue_ids_and_recipes():
    ids = [r["id"] for r in runtimes.CATALOGUE]
    assert len(set(ids)) == len(ids) and all(i.startswith("srt_") for i in ids)
    for r in runtimes.CATALOGUE:
        runtimes.require_buildable(r)
        if r["name"] != "base":
            chain = runtimes.chain(r["name"])
            assert chain[0]["build"].get("suite") and chain[-1] is r
    assert [r["name"] for r in runtimes.chain("python:3.14")] == ["debian:sid", "python:3.14"]
    assert [r["name"] for r in runtimes.chain("bun:1")] == ["debian:12", "bun:1"]
    assert runtimes.RECIPES["debian:sid"]["build"]["check_valid_until"] is False
    assert "debian:sid" not in runtimes.BY_NAME        # an internal base, not offered
    assert runtimes.resolve_ref(runtimes.BY_NAME["node:lts"]["id"])["name"] == "node:lts"
    with pytest.raises(E.RuntimeNotFound):
        runtimes.resolve_ref("ruby:3")
    for name in ("python:3.14", "bun:1", "node:lts", "node:20", "python:3.11", "debian:12"):
        assert not runtimes.BY_NAME[name].get("usr_overlay")


def test_check_dependencies():
    deb = runtimes.BY_NAME["debian:12"]
    assert runtimes.check_dependencies(deb, ["jq", "curl", "jq"]) == ["curl", "jq"]
    assert runtimes.check_dependencies(deb, []) == []
    with pytest.raises(E.ValidationError, match="Invalid apt package name"):
        runtimes.check_dependencies(deb, ["jq; rm -rf /"])
    with pytest.raises(E.ValidationError, match="Debian-based runtime"):
        runtimes.check_dependencies(runtimes.BY_NAME["base"], ["jq"])
    assert runtimes.DEFAULT_WITH_DEPENDENCIES in runtimes.BY_NAME


def test_deps_key_is_order_independent():
    assert images.deps_key("debian:12", ["b", "a", "a"]) == images.deps_key("debian:12", ["a", "b"])
    assert images.deps_key("debian:12", ["a"]) != images.deps_key("python:3.11", ["a"])
    p = images.deps_path("/pool", "python:3.11", ["jq"])
    assert p.startswith("/pool/images/deps/python-3.11-") and p.endswith(".v" + images.IMAGE_VERSION)


# apt sources -------------------------------------------------------------------------------------
def test_read_sources_deb822_and_legacy(tmp_path, monkeypatch):
    monkeypatch.delenv("LOCALSB_APT_MIRROR", raising=False)
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\nEnabled: no\nURIs: http://disabled.example\nSuites: sid\n")
    (d / "other.sources").write_text("Types: deb-src\nURIs: http://src.example\nSuites: bookworm\n")
    legacy = tmp_path / "sources.list"
    legacy.write_text("# deb http://commented.example bookworm main\n"
                      "deb [arch=amd64 signed-by=/x.gpg] http://legacy.example/debian bookworm main contrib\n")
    got = D.read_sources(str(d), str(legacy))
    assert [s["uris"][0] for s in got] == ["http://mirror.example/debian", "http://mirror.example/debian-security",
                                           "http://legacy.example/debian"]
    assert got[2]["components"] == ["main", "contrib"]
    assert D.mirrors(got) == ("http://mirror.example/debian", "http://mirror.example/debian-security")
    assert D.mirrors([]) == ("http://deb.debian.org/debian", None)
    monkeypatch.setenv("LOCALSB_APT_MIRROR", "http://127.0.0.1:9/debian/")
    assert D.mirrors(got) == ("http://127.0.0.1:9/debian", None)


def test_write_apt_config(tmp_path):
    root = tmp_path / "root"
    for d in ("etc/apt", "usr/sbin"):
        (root / d).mkdir(parents=True)
    (root / "etc/apt/sources.list").write_text("deb http://x bookworm main\n")
    D.write_apt_config(str(root), "bookworm", "http://m/debian", "http://m/debian-security")
    text = (root / "etc/apt/sources.list.d/debian.sources").read_text()
    assert "Suites: bookworm bookworm-updates" in text and "Suites: bookworm-security" in text
    assert not (root / "etc/apt/sources.list").exists()
    assert "Check-Valid-Until" not in (root / "etc/apt/apt.conf.d/90localsb").read_text()
    assert os.access(root / "usr/sbin/policy-rc.d", os.X_OK)
    D.write_apt_config(str(root), "sid", "http://m/debian", "http://m/debian-security", check_valid_until=False)
    text = (root / "etc/apt/sources.list.d/debian.sources").read_text()
    assert "Suites: sid\n" in text and "security" not in text
    assert 'Acquire::Check-Valid-Until "false"' in (root / "etc/apt/apt.conf.d/90localsb").read_text()


# apt errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("output,message", [
    ("Reading package lists...\nE: Unable to locate package nosuch\n", "Unknown apt package: nosuch"),
    ("E: Couldn't find any package by regex 'lib.zz'\n", "Unknown apt package: lib.zz"),
    ("E: Couldn't find any package by glob 'x*'\n", "Unknown apt package: x*"),
    ("E: Package 'oldpkg' has no installation candidate\n", "Unknown apt package: oldpkg"),
    ("E: Version '9.9' for 'jq' was not found\n", "Unknown apt package version: jq=9.9"),
])
def test_unknown_package_error(output, message):
    err = D.unknown_package_error(output)
    assert isinstance(err, E.ValidationError) and str(err) == message


def test_unknown_package_error_none():
    assert D.unknown_package_error("E: Sub-process /usr/bin/dpkg returned an error code (1)\n") is None


# reachability ------------------------------------------------------------------------------------
def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_check_reachable_fails_at_once():
    url = f"http://127.0.0.1:{_closed_port()}/debian/dists/bookworm/InRelease"
    t0 = time.monotonic()
    with pytest.raises(E.NetworkError) as ei:
        D.check_reachable(url, "runtime python:3.14 (Debian mirror)")
    assert time.monotonic() - t0 < 2
    msg = str(ei.value)
    assert "\n" not in msg and "python:3.14" in msg and "not reachable" in msg and url in msg


def test_check_reachable_accepts_any_answer():
    class H(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404 if "missing" in self.path else 200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        D.check_reachable(f"http://127.0.0.1:{srv.server_port}/dists/sid/InRelease", "x")
        D.check_reachable(f"http://127.0.0.1:{srv.server_port}/missing", "x")   # answered: reachable
    finally:
        srv.shutdown()


# progress ----------------------------------------------------------------------------------------
class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_progress_only_on_a_terminal(monkeypatch, tty):
    s = _Stream(tty)
    monkeypatch.setattr("sys.stderr", s)
    images.tty_progress("building runtime bun:1: npm pack")
    assert s.getvalue() == ("localsb: building runtime bun:1: npm pack\n" if tty else "")


# the build protocol (overlay driver, package-manager steps replaced) -----------------------------
@pytest.fixture
def pool(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSB_STORAGE", "overlay")
    monkeypatch.setattr(images, "preflight", lambda name, root: None)
    monkeypatch.setattr(images, "progress", lambda msg: None)
    return storage.open_pool(str(tmp_path / "state"))


def _fake_build(calls, fail_on=()):
    def build(b, r, parent):
        calls.append(r["name"])
        if parent is None:
            b.pool.create_volume(b.tmp)
            os.makedirs(os.path.join(b.root, "etc"))
        else:
            b.pool.snapshot(parent, b.tmp, read_only=False)
        with open(os.path.join(b.root, "etc", r["name"].replace(":", "-")), "w") as fh:
            fh.write("x")
        if r["name"] in fail_on:
            raise E.BuildFailed(f"{r['name']} failed")
        return {"name": r["name"], "version": "1"}
    return build


def test_image_built_once_parents_first_and_renamed_into_place(pool, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(images, "_build", _fake_build(calls))
    path = images.ensure_image(pool, "python:3.11", log_dir=str(tmp_path / "logs"))
    assert calls == ["debian:12", "python:3.11"]
    assert path == images.image_path(pool.root, "python:3.11") and pool.is_read_only(path)
    assert sorted(os.listdir(os.path.join(path, "root", "etc"))) == ["debian-12", "python-3.11"]
    info = images.image_info(path)
    assert info["version"] == "1" and info["files"] == 2 and info["buildSeconds"] >= 0
    assert images.ensure_image(pool, "python:3.11") == path and calls == ["debian:12", "python:3.11"]
    assert images.is_built(os.path.dirname(pool.root), "debian:12")
    assert not images.is_built(os.path.dirname(pool.root), "bun:1")
    assert os.path.exists(tmp_path / "logs" / "build-python-3.11.v1.log")


def test_failed_build_leaves_no_image_and_stale_temp_is_deleted(pool, monkeypatch):
    calls = []
    monkeypatch.setattr(images, "_build", _fake_build(calls, fail_on=("bun:1",)))
    with pytest.raises(E.BuildFailed):
        images.ensure_image(pool, "bun:1")
    imgs = os.path.join(pool.root, "images")
    assert not os.path.exists(images.image_path(pool.root, "bun:1"))
    assert [d for d in os.listdir(imgs) if ".building-" in d] == []
    assert os.path.isdir(images.image_path(pool.root, "debian:12"))     # the parent stays: it is complete
    # a builder killed mid-way leaves its temporary volume: the next build removes it
    stale = images.image_path(pool.root, "bun:1") + ".building-99999"
    pool.create_volume(stale)
    monkeypatch.setattr(images, "_build", _fake_build(calls))
    images.ensure_image(pool, "bun:1")
    assert not os.path.exists(stale) and os.path.isdir(images.image_path(pool.root, "bun:1"))


def test_dependency_layer_cached_and_unknown_package_leaves_nothing(pool, monkeypatch):
    monkeypatch.setattr(images, "_build", _fake_build([]))
    monkeypatch.setattr(D, "check_reachable", lambda *a, **k: None)
    monkeypatch.setattr(D, "clean", lambda root, log: None)
    installs = []

    def apt_install(root, pkgs, log, update=True):
        installs.append(list(pkgs))
        if "nosuch" in pkgs:
            raise E.ValidationError("Unknown apt package: nosuch")
        open(os.path.join(root, "etc", "+".join(pkgs)), "w").close()

    monkeypatch.setattr(D, "apt_install", apt_install)
    a = images.ensure_deps(pool, "debian:12", ["jq", "curl"])
    b = images.ensure_deps(pool, "debian:12", ["curl", "jq", "jq"])
    assert a == b and installs == [["curl", "jq"]] and pool.is_read_only(a)
    assert json.load(open(os.path.join(a, "image.json")))["dependencies"] == ["curl", "jq"]
    assert os.path.exists(os.path.join(a, "root", "etc", "curl+jq"))
    deps = os.path.join(pool.root, "images", "deps")
    before = sorted(os.listdir(deps))
    with pytest.raises(E.ValidationError, match="nosuch"):
        images.ensure_deps(pool, "debian:12", ["jq", "nosuch"])
    assert sorted(os.listdir(deps)) == before
    base = images.ensure_base(pool)
    with pytest.raises(E.BuildFailed, match="not a Debian image"):
        images.ensure_deps(pool, "base", ["jq"], base_volume=base, key="snp_x")
