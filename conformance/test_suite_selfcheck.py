"""Checks of the suite itself: its scenarios are well formed and cover the product docs (every
example, every command and alias), and it notices a broken wire shape in mockcloud."""
from __future__ import annotations

import os
import re
import sys

import pytest

from . import harness, runners

# The product docs (a copy kept with the suite, so that CI checks coverage against it).
DOC = os.path.join(harness.HERE, "reference", "agentuity-sandbox-cli.md")

# Every command and alias of the product docs ("Quick Reference" and "Aliases"), as the words
# after `cloud`.
COMMANDS = [
    "sandbox run", "sandbox create", "sandbox new", "sandbox exec", "sandbox list", "sandbox ls", "sb list",
    "sandbox get", "sandbox show", "sandbox info",
    "sandbox delete", "sandbox rm", "sandbox del", "sandbox remove", "sandbox destroy", "sandbox terminate",
    "sandbox pause", "sandbox hibernate", "sandbox resume", "sandbox wake",
    "sandbox fs cp", "sandbox fs ls", "sandbox fs mkdir", "sandbox fs rm", "sandbox fs rmdir",
    "sandbox fs download", "sandbox fs dl", "sandbox fs upload", "sandbox fs ul", "sandbox files ls", "sandbox file mkdir",
    "sandbox snapshot create", "sandbox snapshot new", "sandbox snapshot list", "sandbox snapshot ls",
    "sandbox snapshot get", "sandbox snapshot show", "sandbox snapshot info", "sandbox snapshot tag",
    "sandbox snapshot delete", "sandbox snapshot build", "sandbox snapshot generate",
    "sandbox checkpoint create", "sandbox checkpoint new", "sandbox checkpoint list", "sandbox checkpoint ls",
    "sandbox checkpoint restore", "sandbox checkpoint delete", "sandbox ckpt list", "sandbox ckpt create",
    "sandbox execution list", "sandbox execution ls", "sandbox execution get", "sandbox execution info",
    "sandbox events", "sandbox runtime list", "sandbox runtime ls", "sandbox rt list", "sandbox env", "sandbox stats",
    "sandbox job create", "sandbox job new", "sandbox job list", "sandbox job ls", "sandbox job get", "sandbox job show",
    "sandbox job logs", "sandbox job destroy",
    "ssh",
]


def _doc_text() -> str:
    with open(DOC, encoding="utf-8") as fh:
        return fh.read()


def _doc_occurrences(text: str) -> list[str]:
    """From each 'agentuity cloud ' in the docs, the text to the end of its line."""
    out = []
    for m in re.finditer(r"agentuity cloud ", text):
        end = text.find("\n", m.start())
        out.append(text[m.start(): end if end != -1 else len(text)])
    return out


def _is_synopsis(occurrence: str) -> bool:
    """A usage line (`... <sandbox-id> [options]`) or prose (`run ...`), not a runnable example."""
    head = occurrence.split("|")[0]
    return bool(re.search(r"<[a-z-]+>|\[(?:options|--[a-z]+|path|KEY=VALUE\.\.\.)\]|\s\.\.\.(?:$|\s)", head))


SCENARIOS = harness.load_all()


def test_scenarios_are_well_formed():
    topics = harness.divergence_topics()
    problems = [p for s in SCENARIOS for p in harness.validate(s, topics)]
    assert not problems, "\n".join(problems)


def test_each_claimed_example_is_run_as_written():
    problems = [f"{s.name}: {e}" for s in SCENARIOS for e in harness.unmatched_examples(s)]
    assert not problems, "examples claimed but not run as written:\n" + "\n".join(problems)


def test_every_doc_example_is_a_scenario():
    text = _doc_text()
    claimed = [harness.example_text(e) for s in SCENARIOS for e in s.examples]
    for e in claimed:
        assert e in text, f"claimed example is not in the product docs: {e!r}"
    missing = [occ for occ in _doc_occurrences(text)
               if not any(occ.startswith(e) for e in claimed) and not _is_synopsis(occ)]
    assert not missing, "product-doc examples no scenario runs:\n" + "\n".join(missing)


def test_every_command_and_alias_is_run():
    ran = set()
    for s in SCENARIOS:
        for st in s.steps + (s.when_unavailable or []):
            if "cmd" not in st:
                continue
            group, argv = harness.step_argv(st)
            words = [w for w in argv if not w.startswith("-") and "<id>" not in w]
            for n in range(1, 4):
                ran.add(" ".join(([] if group == "ssh" else [group]) + words[:n]) if group != "ssh" else "ssh")
    missing = [c for c in COMMANDS if c not in ran]
    assert not missing, f"commands or aliases no scenario runs: {missing}"
    text = _doc_text()
    claimed = [harness.example_text(e) for s in SCENARIOS for e in s.examples]
    synopses = {re.match(r"agentuity cloud ((?:[a-z]+(?: |$))+)", occ).group(1).strip()
                for occ in _doc_occurrences(text)
                if _is_synopsis(occ) and not any(occ.startswith(e) for e in claimed)}
    uncovered = [c for c in synopses if not any(r == c or r.startswith(c + " ") for r in ran)]
    assert not uncovered, f"documented commands no scenario runs: {uncovered}"


def test_internet_scenarios_say_why_and_are_skipped(conformance):
    for s in SCENARIOS:
        if s.internet:
            assert conformance.skip_reason(s.name, "local").startswith("needs the internet: ")


# --- a broken wire shape must be noticed ------------------------------------------------------------

MUTATION = ("GET /sandbox/{sandboxId}", "data.executions", "data.executionCount")


@pytest.fixture(scope="module")
def mutant_server():
    if os.geteuid() != 0:
        pytest.skip("runs real sandboxes: needs root")
    route, src, dst = MUTATION
    srv = runners.Mockcloud()
    try:
        srv.start(serve_argv=[sys.executable, "-m", "conformance.mutant_mockcloud", "--route", route,
                              "--rename", src, dst, "serve"])
    except Exception:
        srv.stop()
        raise
    yield srv
    srv.stop()


@pytest.mark.parametrize("kind", ["cloud", "official", "sdk"])
def test_a_renamed_field_in_mockcloud_fails_a_scenario(kind, mutant_server, conformance):
    """mockcloud answering `GET /sandbox/{id}` with `executionCount` instead of `executions`
    makes create-get fail on both clients of the API, with the field named in the failure,
    though the same scenario against the real mockcloud has no such failure."""
    if kind == "official" and runners.official_skip_reason():
        pytest.skip(runners.official_skip_reason())
    if kind == "sdk" and runners.sdk_skip_reason():
        pytest.skip(runners.sdk_skip_reason())
    s = conformance.scenarios["create-get"]
    runner = {"cloud": runners.CloudRunner, "official": runners.OfficialRunner,
              "sdk": runners.SdkRunner}[kind](mutant_server)
    session = runner.open(s.name)
    try:
        mutated = harness.execute(s, session, kind)
    finally:
        session.close()
        runner.close()
    local = conformance.record(s.name, "local")
    normal = conformance.record(s.name, kind)
    alt = conformance.record(s.name, "cloud") if kind != "cloud" else None
    before = {sr.index: set(errs) for sr, errs in harness.step_problems(normal, local, alt)}
    after = harness.step_problems(mutated, local, alt)
    new = {sr.index: [e for e in errs if e not in before.get(sr.index, set())] for sr, errs in after}
    new = {i: errs for i, errs in new.items() if errs}
    assert new, f"renaming {MUTATION[1]} went unnoticed on {kind}"
    text = "\n".join(e for errs in new.values() for e in errs)
    assert "executions" in text or "ValidationOutputError" in text, text
