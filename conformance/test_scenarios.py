"""Every scenario on every runner: the runner's outcome must meet the scenario's expectations and
equal the local runner's (normalised), except where the scenario marks a documented divergence.

The runs themselves happen in the session's scheduler (conftest.Conformance), several at once;
each test waits for its pair and checks it.
"""
from __future__ import annotations

import pytest

from . import harness
from .conftest import RUNNER_ORDER, record_outcome, record_sdk_steps

SCENARIOS = harness.load_all()
CASES = [(s.name, r) for s in SCENARIOS for r in RUNNER_ORDER]


@pytest.mark.parametrize("case", CASES, ids=[f"{s}:{r}" for s, r in CASES])
def test_scenario(case, conformance):
    scenario, runner = case
    s = conformance.scenarios[scenario]
    rec = conformance.record(scenario, runner)
    if rec.skipped:
        record_outcome(scenario, runner, "skip", 0.0, rec.skipped)
        pytest.skip(rec.skipped)
    ref = alt = None
    if runner != "local":
        ref = conformance.record(scenario, "local")
        alt = conformance.record(scenario, "cloud") if runner != "cloud" else None
        ref = None if ref.skipped else ref
        alt = None if (alt is None or alt.skipped) else alt
    problems = harness.check(s, rec, ref, alt)
    if runner == "sdk":
        record_sdk_steps(scenario, rec.sdk_steps)
    record_outcome(scenario, runner, "FAIL" if problems else "pass", rec.elapsed, problems[0][:200] if problems else "")
    assert not problems, f"scenario {scenario} on {runner} ({s.file}):\n\n" + "\n\n".join(problems)
