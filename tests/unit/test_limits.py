"""Sizes, CPU and timeouts within the documented ranges (localsb/api/limits.py), negatives named as
such, for the CLI (exit 2, one line, nothing called) and mockcloud (400 envelope) alike (issue 16,
item 7)."""
from __future__ import annotations

import logging
import os
import socket
import sys
import urllib.parse

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from cli_fake_backend import FakeBackend, cli  # noqa: E402

from localsb.api import limits  # noqa: E402
from localsb.api.errors import ValidationError  # noqa: E402
from localsb.api.specs import CreateSpec  # noqa: E402
from mockcloud.app import ThreadedServer, make_app  # noqa: E402
from mockcloud.store import Store  # noqa: E402
from tests.fakes.memory_engine import MemoryEngine  # noqa: E402
from tests.unit.test_mockcloud_api import Client  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("fn,value,expected", [
    (limits.check_memory, "16Mi", 16 << 20), (limits.check_memory, "64Gi", 64 << 30),
    (limits.check_disk, "16Mi", 16 << 20), (limits.check_disk, "1Ti", 1 << 40),
    (limits.check_cpu, "10m", 10), (limits.check_cpu, "64", 64000), (limits.check_cpu, "0.5", 500),
    (limits.check_timeout, "1s", 1.0), (limits.check_timeout, "720h", 720 * 3600.0),
])
def test_bounds_are_inclusive(fn, value, expected):
    assert fn(value) == expected


@pytest.mark.parametrize("fn,value,message", [
    (limits.check_memory, "-5Mi", "Invalid memory '-5Mi': must be positive (got a negative size)"),
    (limits.check_memory, "15Mi", "Invalid memory '15Mi': must be at least 16Mi (range 16Mi to 64Gi)"),
    (limits.check_memory, "99999999Ti", "Invalid memory '99999999Ti': must be at most 64Gi (range 16Mi to 64Gi)"),
    (limits.check_disk, "1", "Invalid disk '1': must be at least 16Mi (range 16Mi to 1Ti)"),
    (limits.check_disk, "2Ti", "Invalid disk '2Ti': must be at most 1Ti (range 16Mi to 1Ti)"),
    (limits.check_cpu, "-1", "Invalid cpu '-1': must be positive (got a negative number)"),
    (limits.check_cpu, "5m", "Invalid cpu '5m': must be at least 10m (range 10m to 64000m)"),
    (limits.check_cpu, "999999999m", "Invalid cpu '999999999m': must be at most 64000m (range 10m to 64000m)"),
    (limits.check_timeout, "0", "Invalid timeout '0': must be at least 1s (range 1s to 720h)"),
    (limits.check_timeout, "500ms", "Invalid timeout '500ms': must be at least 1s (range 1s to 720h)"),
    (limits.check_timeout, "-5s", "Invalid timeout '-5s': must be positive (got a negative duration)"),
    (limits.check_timeout, "721h", "Invalid timeout '721h': must be at most 720h (range 1s to 720h)"),
])
def test_out_of_range_is_one_line_naming_value_and_range(fn, value, message):
    with pytest.raises(ValidationError) as e:
        fn(value)
    assert str(e.value) == message


def test_paused_timeout_zero_means_never_but_other_timeouts_need_a_second():
    CreateSpec(paused_timeout="0s").validate()
    CreateSpec(paused_timeout="24h", idle_timeout="1h", execution_timeout="5m").validate()
    for kw in ({"idle_timeout": "0s"}, {"execution_timeout": "0"}, {"paused_timeout": "100ms"},
               {"paused_timeout": "9999h"}):
        with pytest.raises(ValidationError):
            CreateSpec(**kw).validate()


@pytest.mark.parametrize("argv,message", [
    (["sb", "run", "--memory", "-5Mi", "--", "true"], "Invalid memory '-5Mi': must be positive (got a negative size)"),
    (["sb", "run", "--memory", "99999999Ti", "--", "true"], "Invalid memory '99999999Ti': must be at most 64Gi"),
    (["sb", "run", "--cpu", "999999999m", "--", "true"], "Invalid cpu '999999999m': must be at most 64000m"),
    (["sb", "run", "--cpu", "-500m", "--", "true"], "Invalid cpu '-500m': must be positive"),
    (["sb", "run", "--disk", "1", "--", "true"], "Invalid disk '1': must be at least 16Mi"),
    (["sb", "run", "--disk", "-1Gi", "--", "true"], "Invalid disk '-1Gi': must be positive"),
    (["sb", "run", "--timeout", "0", "--", "true"], "Invalid timeout '0': must be at least 1s"),
    (["sb", "run", "--timeout", "-5s", "--", "true"], "Invalid timeout '-5s': must be positive"),
    (["sb", "create", "--idle-timeout", "0s"], "Invalid idle timeout '0s': must be at least 1s"),
    (["sb", "create", "--paused-timeout", "-1h"], "Invalid paused timeout '-1h': must be positive"),
    (["sb", "create", "--memory", "-5Mi"], "Invalid memory '-5Mi': must be positive"),
    (["sb", "exec", "sbx_1", "--timeout", "0", "--", "true"], "Invalid timeout '0': must be at least 1s"),
    (["sb", "exec", "sbx_1", "--timeout", "-1s", "--", "true"], "Invalid timeout '-1s': must be positive"),
])
def test_cli_rejects_out_of_range_with_exit_2_before_any_call(argv, message):
    b = FakeBackend()
    b.add_sandbox(sandboxId="sbx_1")
    r = cli(*argv, backend=b)
    assert r.rc == 2, r
    assert r.err.startswith(f"✗ {message}") and r.err.count("\n") == 1, r.err
    assert "expected one argument" not in r.err
    assert [c for c in b.calls if c[0] not in ("sandbox_get",)] == []


def test_cli_accepts_the_bounds():
    r = cli("sb", "create", "--memory", "16Mi", "--cpu", "64000m", "--disk", "1Ti", "--idle-timeout", "1s",
            "--paused-timeout", "0s", "--dry-run", "--json", backend=FakeBackend())
    assert r.rc == 0, r


@pytest.fixture
def server(tmp_path):
    state = str(tmp_path / "mc")
    engine = MemoryEngine(str(tmp_path / "engine"))
    key = Store(state).key_create("acme")
    with ThreadedServer(make_app(state, engine=engine)) as srv:
        srv.client = Client(srv.url, key["key"])
        yield srv


@pytest.mark.parametrize("body,message", [
    ({"resources": {"memory": "99999999Ti"}}, "Invalid memory '99999999Ti': must be at most 64Gi"),
    ({"resources": {"memory": "-5Mi"}}, "Invalid memory '-5Mi': must be positive"),
    ({"resources": {"cpu": "999999999m"}}, "Invalid cpu '999999999m': must be at most 64000m"),
    ({"resources": {"disk": "1"}}, "Invalid disk '1': must be at least 16Mi"),
    ({"timeout": {"execution": "0"}}, "Invalid timeout '0': must be at least 1s"),
    ({"timeout": {"idle": "-1s"}}, "Invalid idle timeout '-1s': must be positive"),
])
def test_mockcloud_answers_400_envelope_for_out_of_range(server, body, message):
    obj = server.client.err("POST", "/sandbox", body, status=400)
    assert obj["code"] == "INVALID_ARGUMENT" and obj["message"].startswith(message), obj


def test_mockcloud_exec_timeout_in_range(server):
    sid = server.client.ok("POST", "/sandbox", {}, status=201)["data"]["sandboxId"]
    obj = server.client.err("POST", f"/sandbox/{sid}/execute", {"command": ["true"], "timeout": "0s"}, status=400)
    assert obj["message"].startswith("Invalid timeout '0s': must be at least 1s")


def test_mockcloud_ignores_unknown_fields_as_hosted(server):
    """The hosted service (Go) ignores fields it does not know; newer CLIs rely on it."""
    body = {"resources": {"memory": "1Gi", "gpu": "1"}, "disableSnapshots": True, "futureField": {"x": 1}}
    server.client.ok("POST", "/sandbox", body, status=201)


def test_mockcloud_oversized_header_is_answered_without_a_traceback(server, caplog):
    u = urllib.parse.urlsplit(server.url)
    with caplog.at_level(logging.DEBUG):
        with socket.create_connection((u.hostname, u.port), timeout=30) as s:
            s.sendall(b"GET /sandbox HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
            answer = s.recv(4096)
    assert answer.split(b" ")[1] in (b"400", b"431"), answer[:100]
    records = [r for r in caplog.records if r.name.startswith("aiohttp")]
    assert records, "the bad request is logged"
    for r in records:
        assert r.exc_info is None and r.levelno <= logging.WARNING, r
        assert "\n" not in r.getMessage()
