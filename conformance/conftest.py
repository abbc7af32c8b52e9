"""The conformance session: one mockcloud, the runners, a scheduler that runs every selected
scenario on every runner (each runner works through its scenarios on its own thread, so the
three clients run side by side), and the scenario × runner table at the end.

Runners: ``local`` (localsb, local engine), ``cloud`` (localsb --backend cloud → mockcloud),
``official`` (@agentuity/cli 2.0.21 → mockcloud), ``sdk`` (@agentuity/core 2.0.21 on node →
mockcloud, through conformance/sdk_client.mjs), and ``hosted`` (the official CLI against the
real service) only when AGENTUITY_REAL_API_KEY is set — see conformance/README.md.
"""
from __future__ import annotations

import concurrent.futures
import os
import threading
import time

import pytest

from . import harness, runners

# Threads per runner: each scenario has its own state directory or organization, so a runner can
# work on several at once; the official CLI (bun, ~0.5 s a command) gets three.
WORKERS = {"local": 1, "cloud": 1, "official": 3, "sdk": 2, "hosted": 1}
RUNNER_ORDER = ["local", "cloud", "official", "sdk"] + (["hosted"] if runners.HostedRunner.enabled() else [])
# The report: (scenario, runner) -> (outcome, seconds, note), filled by test_scenarios.
REPORT: dict = {}
_REPORT_LOCK = threading.Lock()


def pytest_configure(config):
    config.addinivalue_line("markers", "conformance_case(scenario, runner): one scenario on one runner")


SDK_STEPS: dict = {}   # scenario -> steps the SDK runner did through the SDK


def record_sdk_steps(scenario: str, n: int) -> None:
    with _REPORT_LOCK:
        SDK_STEPS[scenario] = n


def record_outcome(scenario: str, runner: str, outcome: str, seconds: float = 0.0, note: str = "") -> None:
    with _REPORT_LOCK:
        REPORT[(scenario, runner)] = (outcome, seconds, note)


def sdk_has_a_step(s, features) -> bool:
    """Does the SDK runner do any step of scenario ``s`` through the SDK?"""
    import shlex
    for st in s.active_steps(features):
        if "cmd" in st and not harness.runner_block(st, "sdk").get("skip"):
            try:
                argv = shlex.split(harness.VAR_RE.sub("X", st["cmd"]))
            except ValueError:
                continue
            if runners.sdk_step(argv):
                return True
    return False


def _needs_root() -> str | None:
    if os.geteuid() != 0:
        return "the conformance suite runs real sandboxes: it needs root (namespaces, cgroups, mounts)"
    return None


class Conformance:
    """Runs (scenario, runner) pairs on demand, in the background, one thread per runner."""

    def __init__(self, scenarios: list, wanted: list):
        self.scenarios = {s.name: s for s in scenarios}
        self.features = harness.enabled_features()
        self.server = None
        self.server_error = None
        self.runners: dict = {}
        self.futures: dict = {}
        self.pools: dict = {}
        self.lock = threading.Lock()
        self.wanted = wanted          # [(scenario, runner)] in test order
        self.prebuild = None

    def start(self) -> None:
        if _needs_root():
            return      # every test skips, with the reason
        # Started even when only local scenarios are selected: the self-check asks for cloud runs
        # on demand, and the local runner's heavy scenarios share its engine state.
        try:
            self.server = runners.Mockcloud().start()
        except Exception as e:  # noqa: BLE001 - every cloud test reports it
            self.server_error = f"mockcloud did not start: {e}"
        self.runners["local"] = runners.LocalRunner(self.server.engine_state if self.server else None)
        if self.server is not None:
            self.runners["cloud"] = runners.CloudRunner(self.server)
            self.runners["official"] = runners.OfficialRunner(self.server)
            self.runners["sdk"] = runners.SdkRunner(self.server)
        if runners.HostedRunner.enabled():
            self.runners["hosted"] = runners.HostedRunner()
        heavy = [s for s, _ in self.wanted if self.scenarios[s].heavy and not self.scenarios[s].internet]
        if heavy and self.server is not None and self.features >= set(harness.HEAVY_FEATURES):
            # Runtime images take tens of seconds to build: start now, while the light scenarios run.
            self.prebuild = threading.Thread(target=runners.prebuild_runtimes, name="conf-prebuild",
                                             args=(self.server.engine_state, harness.PREBUILD_RUNTIMES), daemon=True)
            self.prebuild.start()
        # Every run a test will need, queued now in test order (scenarios that build images
        # last); comparisons need local's runs.
        order = []
        wanted = sorted(self.wanted, key=lambda p: self.scenarios[p[0]].heavy)
        for scenario, runner in wanted:
            for r in (("local", "cloud") if runner != "local" else ()) + (runner,):
                if (scenario, r) not in order:
                    order.append((scenario, r))
        for scenario, runner in order:
            self._submit(scenario, runner)

    def _submit(self, scenario: str, runner: str):
        with self.lock:
            if (scenario, runner) in self.futures:
                return self.futures[(scenario, runner)]
            pool = self.pools.get(runner)
            if pool is None:
                pool = self.pools[runner] = concurrent.futures.ThreadPoolExecutor(
                    WORKERS.get(runner, 1), thread_name_prefix=f"conf-{runner}")
            fut = pool.submit(self._run, scenario, runner)
            self.futures[(scenario, runner)] = fut
            return fut

    def skip_reason(self, scenario: str, runner: str) -> str | None:
        s = self.scenarios[scenario]
        if s.internet:
            return f"needs the internet: {s.internet}"
        why = _needs_root()
        if why:
            return why
        if runner == "sdk" and not sdk_has_a_step(s, self.features):
            return "no step of this scenario is an SDK operation (human output or a command the SDK has not)"
        if runner in ("cloud", "official", "sdk") and self.server is None:
            return None   # not a skip: a failure, reported by record()
        r = self.runners.get(runner)
        return r.skip_reason() if r is not None else None

    def _run(self, scenario: str, runner: str) -> harness.RunRecord:
        s = self.scenarios[scenario]
        kind = "official" if runner == "hosted" else runner
        skip = self.skip_reason(scenario, runner)
        if skip:
            return harness.RunRecord(scenario, runner, kind, skipped=skip)
        r = self.runners.get(runner)
        if r is None:
            return harness.RunRecord(scenario, runner, kind, error=self.server_error or f"no runner {runner}")
        try:
            session = r.open(scenario, shared=s.heavy)
        except Exception as e:  # noqa: BLE001 - e.g. mockcloud went away
            return harness.RunRecord(scenario, runner, kind, error=f"could not open a session: {type(e).__name__}: {e}")
        try:
            return harness.execute(s, session, kind, self.features)
        except Exception as e:  # noqa: BLE001
            return harness.RunRecord(scenario, runner, kind, error=f"harness error: {type(e).__name__}: {e}")
        finally:
            try:
                session.close()
            except Exception:  # noqa: BLE001 - teardown problems surface in the leak check
                pass

    def record(self, scenario: str, runner: str) -> harness.RunRecord:
        return self._submit(scenario, runner).result()

    def stop(self) -> None:
        for pool in self.pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        if self.prebuild is not None:
            self.prebuild.join()
        try:
            for r in self.runners.values():
                r.close()
        finally:
            if self.server is not None:
                self.server.stop()


@pytest.fixture(scope="session")
def conformance(request):
    wanted = [tuple(item.callspec.params["case"]) for item in request.session.items
              if getattr(item, "callspec", None) is not None and "case" in item.callspec.params
              and item.originalname == "test_scenario"]
    # Only what the selected tests need is queued; anything else (the self-check's references) is
    # run on demand.
    c = Conformance(harness.load_all(), wanted)
    t0 = time.monotonic()
    c.start()
    try:
        yield c
    finally:
        try:
            c.stop()
        finally:
            REPORT[("__session__", "")] = ("", time.monotonic() - t0, "")
        leaks = runners.leaked_resources()
        assert not leaks, f"the conformance suite left host resources behind: {leaks}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = {}
    for (scenario, runner), value in REPORT.items():
        if scenario == "__session__":
            continue
        rows.setdefault(scenario, {})[runner] = value
    if not rows:
        return
    tr = terminalreporter
    cols = [r for r in RUNNER_ORDER if any(r in v for v in rows.values())]
    width = max(len(s) for s in rows) + 2
    tr.write_sep("=", "conformance: scenario × runner")
    tr.write_line("scenario".ljust(width) + "".join(c.ljust(16) for c in cols))
    totals = {c: [0, 0, 0, 0.0] for c in cols}
    order = [s.name for s in harness.load_all()]
    for scenario in sorted(rows, key=lambda s: order.index(s) if s in order else len(order)):
        line = scenario.ljust(width)
        for c in cols:
            outcome, secs, _ = rows[scenario].get(c, ("-", 0.0, ""))
            cell = outcome if outcome in ("-", "skip") else f"{outcome} {secs:4.1f}s"
            line += cell.ljust(16)
            if outcome == "pass":
                totals[c][0] += 1
            elif outcome == "FAIL":
                totals[c][1] += 1
            elif outcome == "skip":
                totals[c][2] += 1
            totals[c][3] += secs
        tr.write_line(line)
    tr.write_line("total".ljust(width) + "".join(
        f"{t[0]}✓ {t[1]}✗ {t[2]}s {t[3]:.0f}s".ljust(16) for t in (totals[c] for c in cols)))
    skipped = sorted({(s, v[2]) for s, d in rows.items() for v in d.values() if v[0] == "skip" and v[2]})
    for s, note in skipped:
        tr.write_line(f"  skip {s}: {note}")
    if SDK_STEPS:
        tr.write_line(f"sdk: {sum(SDK_STEPS.values())} steps through the SDK in {sum(1 for n in SDK_STEPS.values() if n)} "
                      f"scenarios (the other steps of those scenarios ran with localsb --backend cloud)")
    session = REPORT.get(("__session__", ""))
    if session:
        tr.write_line(f"wall time of the runs: {session[1]:.0f}s")

