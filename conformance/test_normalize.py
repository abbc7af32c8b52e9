"""The normaliser: what it hides (ids by first appearance, times, durations, layout) and what it
must not hide (which object an id names, everything else)."""
from __future__ import annotations

from .normalize import Normalizer


def test_ids_are_numbered_by_first_appearance_and_kept():
    n = Normalizer()
    assert n.text("✓ created sandbox sbx_aaaaaaaaaaaa in 12ms") == "✓ created sandbox <sbx:1> in <ms>"
    assert n.text("sbx_bbbbbbbbbbbb then sbx_aaaaaaaaaaaa") == "<sbx:2> then <sbx:1>"
    assert n.text("exec_cccccccccccc snp_dddddddddddd ckpt_eee job_ffffffffffff") == \
        "<exec:1> <snp:1> <ckpt:1> <job:1>"


def test_a_different_object_stays_different():
    a, b = Normalizer(), Normalizer()
    # run A: get answers about the sandbox it was asked for; run B: about another one
    a.seed("get sbx_aaaaaaaaaaaa"); b.seed("get sbx_aaaaaaaaaaaa")
    assert a.json({"sandboxId": "sbx_aaaaaaaaaaaa"}) != b.json({"sandboxId": "sbx_zzzzzzzzzzzz"})


def test_json_numbering_does_not_depend_on_key_order():
    a, b = Normalizer(), Normalizer()
    x = a.json({"snapshotId": "snp_111111111111", "sandboxes": [{"sandboxId": "sbx_222222222222"}]})
    y = b.json({"sandboxes": [{"sandboxId": "sbx_999999999999"}], "snapshotId": "snp_888888888888"})
    assert x == y


def test_times_durations_and_layout():
    n = Normalizer(region="usc")
    assert n.text("Created:     2026-11-26T07:10:38.093Z") == "Created: <time>"
    assert n.text("  Region:      usc") == "  Region: <region>"
    assert n.text("│ sbx_aaaaaaaaaaaa │ usc    │\n\n├──────┼──┤") == "│ <sbx:1> │ <region> │\n├─┼─┤"
    assert n.text("auto-terminate at 1/1/2030, 12:00:00 AM if") == "auto-terminate at <time> if"
    assert n.json({"durationMs": 130, "exitCode": 3}) == {"durationMs": "<ms>", "exitCode": 3}


def test_what_is_not_normalised_stays():
    n = Normalizer()
    assert n.text("exit code 3 in 5s: hello  world") == "exit code 3 in <ms>: hello world"
    assert n.json({"output": "a  b\n\n"}) == {"output": "a  b\n\n"}   # command output keeps its bytes
    assert n.json({"exitCode": 0, "status": "idle"}) == {"exitCode": 0, "status": "idle"}


def test_stream_urls_cli_name_and_context():
    n = Normalizer(context={"/tmp/work": "<cwd>"})
    assert n.json({"stdoutStreamUrl": "http://127.0.0.1:1/streams/x", "a": 1}) == {"a": 1}
    assert n.text("Use 'localsb cloud sandbox job get'") == n.text("Use 'agentuity cloud sandbox job get'")
    assert n.text("Copied → /tmp/work/out.txt") == "Copied → <cwd>/out.txt"


def test_fork_does_not_shift_numbering():
    n = Normalizer()
    n.text("sbx_aaaaaaaaaaaa")
    f = n.fork()
    f.text("sbx_bbbbbbbbbbbb")
    assert n.text("sbx_cccccccccccc") == "<sbx:2>"


def test_organization_names_and_slugs_are_placeholders():
    a = Normalizer().json({"orgId": "org_local", "orgName": "org_local", "fullName": "@org_local/snap:latest",
                           "org": {"id": "org_local", "name": "org_local", "slug": "org_local"}})
    b = Normalizer().json({"orgId": "org_x1y2z3", "orgName": "conf-cloud-s", "fullName": "@conf-cloud-s/snap:latest",
                           "org": {"id": "org_x1y2z3", "name": "conf-cloud-s", "slug": "conf-cloud-s"}})
    assert a == b
