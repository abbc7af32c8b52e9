"""The clients a scenario runs on: localsb on the local engine, localsb against mockcloud, the
official Agentuity CLI against mockcloud (and, by hand, against the real hosted service).

Every runner takes the words after ``cloud sandbox`` and returns a ``Result``: the exit code, and
stdout and stderr, parsed as JSON when the command line has ``--json`` and the text parses.
A runner opens one ``Session`` per scenario: its own working directory, its own sandbox space (a
state directory for the local engine; an organization of its own on mockcloud, so that ``list``
and ``stats`` see only the scenario's sandboxes) and, for the official CLI, a throwaway
AGENTUITY_CONFIG_DIR and HOME (reference/official-cli-wire.md §1.1).

Each command is a real process: the conformance suite tests what a user's shell would see.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL_CLI_VERSION = "2.0.21"
OFFICIAL_CLI_DIR = os.environ.get("LOCALSB_OFFICIAL_CLI_DIR", "/opt/localsb-official-cli")
# Every command ends well within this; one that does not is a hang, reported as exit 124.
COMMAND_TIMEOUT = 90.0
# Variables a runner passes through from the suite's own environment; everything else is set
# explicitly, so a developer's AGENTUITY_* or LOCALSB_* settings cannot leak into a run.
PASS_THROUGH = ("PATH", "SYSTEMROOT", "TMPDIR")


@dataclass
class Result:
    """What one command did. ``stdout``/``stderr`` are parsed JSON when ``json`` and parseable."""
    argv: list
    rc: int
    stdout: object
    stderr: object
    raw_stdout: str
    raw_stderr: str
    json: bool
    elapsed: float

    def text(self, stream: str) -> str:
        return self.raw_stdout if stream == "stdout" else self.raw_stderr


def json_mode(argv: list) -> bool:
    """--json anywhere before the command separator, as both CLIs read it."""
    head = argv[:argv.index("--")] if "--" in argv else argv
    if head[:1] == ["sdk"]:      # the SDK runner's own operations print JSON, except raw file bodies
        return head[1:2] != ["read-file"]
    return "--json" in head


def _parse(text: str, want_json: bool):
    if not want_json or not text.strip():
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _base_env(home: str) -> dict:
    env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
    # Human dates are printed in the local time zone and locale: pin both so runs compare.
    env.update(HOME=home, LANG="C.UTF-8", LC_ALL="C.UTF-8", TZ="UTC", NO_COLOR="1", TERM="dumb")
    # Both CLIs print plain markers ([OK] for ✓) when an AI coding agent is among their parent
    # processes: pin the human output whoever runs the suite (the agent-mode scenario sets its own).
    env["AGENTUITY_AGENT_MODE"] = "none"
    return env


class Session:
    """One scenario on one runner: a working directory, an environment, and the commands run."""

    def __init__(self, runner: "Runner", scenario: str, workdir: str, env: dict, prefix: list):
        self.runner, self.scenario, self.workdir, self.env, self.prefix = runner, scenario, workdir, env, prefix
        self.background: dict[str, subprocess.Popen] = {}
        self.sandboxes: list[str] = []      # every sandbox id the session's commands printed
        self.context: dict[str, str] = {}   # runner-specific literal values -> placeholders
        self.region = env.get("AGENTUITY_REGION") or "local"   # what the backend calls its region

    def _cmd(self, argv: list, group: str | None = None) -> list:
        # ``group``: the alias the command line uses instead of ``sandbox`` (``cloud sb list``).
        prefix = self.prefix[:-1] + [group] if group else self.prefix
        return [*prefix, *argv]

    def run(self, argv: list, *, stdin: bytes | None = None, env: dict | None = None,
            timeout: float = COMMAND_TIMEOUT, group: str | None = None) -> Result:
        """Run ``cloud sandbox <argv>``; stdin is /dev/null unless given (a pipe then)."""
        e = dict(self.env, **(env or {}))
        t0 = time.monotonic()
        try:
            p = subprocess.run(self._cmd(argv, group), input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                               capture_output=True, env=e, cwd=self.workdir, timeout=timeout)
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as ex:
            rc, out, err = 124, ex.stdout or b"", (ex.stderr or b"") + f"\n[conformance: timed out after {timeout}s]".encode()
        return self._result(argv, rc, out, err, time.monotonic() - t0)

    def _result(self, argv, rc, out: bytes, err: bytes, elapsed: float) -> Result:
        want = json_mode(argv)
        so, se = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        if isinstance(self.runner, OfficialRunner):
            # Two official CLI processes sharing a HOME (a background exec and the next step) race
            # on the CLI's own log directory, and the loser prints this on stdout: the CLI's noise,
            # not the sandbox's output.
            so = "".join(line for line in so.splitlines(keepends=True)
                         if not line.startswith("Failed to write log entry: "))
        for sid in re.findall(r"\bsbx_[a-z0-9]{6,}\b", so + se):
            if sid not in self.sandboxes:
                self.sandboxes.append(sid)
        return Result(list(argv), rc, _parse(so, want), _parse(se, want), so, se, want, elapsed)

    def start(self, name: str, argv: list, *, env: dict | None = None) -> None:
        """Start a command and leave it running (``background:`` steps); ``wait`` collects it."""
        e = dict(self.env, **(env or {}))
        proc = subprocess.Popen(self._cmd(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=e, cwd=self.workdir)
        proc._conformance = (list(argv), time.monotonic())  # type: ignore[attr-defined]
        self.background[name] = proc

    def wait(self, name: str, timeout: float = COMMAND_TIMEOUT) -> Result:
        proc = self.background.pop(name)
        argv, t0 = proc._conformance  # type: ignore[attr-defined]
        try:
            out, err = proc.communicate(timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            rc = 124
        return self._result(argv, rc, out, err, time.monotonic() - t0)

    def close(self) -> None:
        for name in list(self.background):
            proc = self.background.pop(name)
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        try:
            self.runner.cleanup(self)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


class Runner:
    """A client of the sandbox command set. ``kind`` groups runners that share expectations:
    the official CLI against mockcloud and against the hosted service are both ``official``."""

    name = "?"
    kind = "?"
    _cache: str | None = None

    @property
    def cache(self) -> str:
        """A directory for compile caches shared by the runner's commands (bun's transpiler cache,
        Python's bytecode): each command is a fresh process, and a cold cache costs ~0.3 s."""
        if self._cache is None:
            self._cache = suite_dir(f"lsbtest-conf-cache-{self.name}-")
        return self._cache

    def close_cache(self) -> None:
        if self._cache is not None:
            shutil.rmtree(self._cache, ignore_errors=True)
            self._cache = None

    def skip_reason(self) -> str | None:
        return None

    def open(self, scenario: str, shared: bool = False) -> Session:
        """``shared``: the scenario builds runtime images; on the local engine it then uses the
        session's shared state directory (see LocalRunner), so that each image is built once."""
        raise NotImplementedError

    def cleanup(self, session: Session) -> None:
        pass

    def close(self) -> None:
        self.close_cache()

    def _python_env(self, env: dict) -> dict:
        # Bytecode goes to the runner's cache, not into the source tree.
        env.update(PYTHONPATH=ROOT, PYTHONPYCACHEPREFIX=os.path.join(self.cache, "pycache"))
        return env

    def _workdir(self, scenario: str) -> str:
        # No agentuity.json here: the official CLI would otherwise pick the project up (§1.7).
        return suite_dir(f"lsbtest-conf-{self.name}-{scenario[:20]}-")


class LocalRunner(Runner):
    """``localsb --backend local``: one engine state directory per scenario (its own btrfs pool),
    so that list, stats and events see only the scenario's sandboxes."""

    name = kind = "local"

    def __init__(self, shared_state: str | None = None):
        self.state_dirs: list[str] = []
        # Scenarios that build runtime images share this state directory (mockcloud's engine's,
        # so one build serves all three runners); they must not count the whole engine's sandboxes.
        self.shared_state = shared_state

    def open(self, scenario: str, shared: bool = False) -> Session:
        work = self._workdir(scenario)
        if shared and self.shared_state:
            state = self.shared_state
        else:
            state = suite_dir("lsbtest-conf-engine-")
            self.state_dirs.append(state)
        env = _base_env(os.path.join(work, ".home"))
        os.makedirs(env["HOME"])
        env.update(LOCALSB_HOME=state, LOCALSB_BACKEND="local")
        self._python_env(env)
        s = Session(self, scenario, work, env, [sys.executable, "-m", "localsb", "cloud", "sandbox"])
        s.state_dir = state  # type: ignore[attr-defined]
        s.context = {work: "<cwd>"}
        return s

    def cleanup(self, session: Session) -> None:
        state = session.state_dir  # type: ignore[attr-defined]
        if state == self.shared_state:
            destroy_engine_sandboxes(state, session.sandboxes)
            return
        teardown_engine_state(state)
        self.state_dirs.remove(state)

    def close(self) -> None:
        try:
            for d in list(self.state_dirs):
                teardown_engine_state(d)
            self.state_dirs.clear()
        finally:
            self.close_cache()


class _MockcloudRunner(Runner):
    """A client of the session's mockcloud, with an organization (and key) of its own per scenario."""

    def __init__(self, server):
        self.server = server

    def _org_env(self, scenario: str) -> tuple[dict, dict]:
        key = self.server.org_key(f"conf-{self.name}-{scenario}")
        return key, self.server.client_env(key)

    def cleanup(self, session: Session) -> None:
        # The org is the session's own: every live sandbox in it is the scenario's.
        destroy_org_sandboxes(session.env)


class CloudRunner(_MockcloudRunner):
    """``localsb --backend cloud`` against mockcloud."""

    name = kind = "cloud"

    def open(self, scenario: str, shared: bool = False) -> Session:
        work = self._workdir(scenario)
        key, client = self._org_env(scenario)
        env = _base_env(os.path.join(work, ".home"))
        os.makedirs(env["HOME"])
        env.update(client, LOCALSB_BACKEND="cloud")
        self._python_env(env)
        s = Session(self, scenario, work, env, [sys.executable, "-m", "localsb", "cloud", "sandbox"])
        s.context = {key["orgName"]: "<org-name>", self.server.url: "<api-url>", work: "<cwd>"}
        return s


def official_bin() -> str:
    return os.path.join(OFFICIAL_CLI_DIR, "node_modules", ".bin")


def official_skip_reason() -> str | None:
    """Why the official CLI cannot run here, or None. Only a missing install is a reason."""
    b = official_bin()
    for exe in ("agentuity", "bun"):
        if not os.access(os.path.join(b, exe), os.X_OK):
            return (f"the official CLI is not installed ({os.path.join(b, exe)} missing): run "
                    f"scripts/install-official-cli.sh (CI does, through scripts/test)")
    try:
        with open(os.path.join(OFFICIAL_CLI_DIR, "node_modules", "@agentuity", "cli", "package.json")) as fh:
            version = json.load(fh).get("version")
    except (OSError, ValueError):
        version = None
    if version != OFFICIAL_CLI_VERSION:
        return (f"the official CLI at {OFFICIAL_CLI_DIR} is {version}, not {OFFICIAL_CLI_VERSION}: run "
                f"scripts/install-official-cli.sh")
    return None


class OfficialRunner(_MockcloudRunner):
    """``agentuity cloud sandbox`` (@agentuity/cli 2.0.21 on bun) against mockcloud, set up as
    reference/official-cli-wire.md §1.1 says: URL variables, a key, an org, a region, a fresh
    AGENTUITY_CONFIG_DIR and HOME per scenario, stdin /dev/null, a directory without agentuity.json."""

    name = kind = "official"

    def skip_reason(self) -> str | None:
        return official_skip_reason()

    def _env(self, work: str) -> dict:
        env = _base_env(os.path.join(work, ".home"))
        os.makedirs(env["HOME"])
        config = os.path.join(work, ".agentuity-config")
        os.makedirs(config)
        env["PATH"] = official_bin() + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        env.update(AGENTUITY_CONFIG_DIR=config, NO_PROXY="127.0.0.1,localhost",
                   BUN_RUNTIME_TRANSPILER_CACHE_PATH=os.path.join(self.cache, "bun"))
        return env

    def open(self, scenario: str, shared: bool = False) -> Session:
        work = self._workdir(scenario)
        key, client = self._org_env(scenario)
        env = self._env(work)
        env.update(client)
        s = Session(self, scenario, work, env, [os.path.join(official_bin(), "agentuity"), "cloud", "sandbox"])
        s.context = {key["orgName"]: "<org-name>", self.server.url: "<api-url>", work: "<cwd>"}
        return s


SDK_CLIENT = os.path.join(ROOT, "conformance", "sdk_client.mjs")
# What sdk_client.mjs exits with for a command that is not an SDK operation (then run by localsb).
SDK_UNSUPPORTED = 199
# ... for an API error answer: localsb prints it (the SDK has no CLI error output of its own).
SDK_API_ERROR = 198
# Commands sdk_client.mjs has (after aliases), in --json mode; `sdk` is the SDK-only operations.
SDK_COMMANDS = {"create", "new", "get", "show", "info", "list", "ls", "exec", "execute", "delete", "rm", "del",
                "remove", "destroy", "terminate", "pause", "hibernate", "suspend", "resume", "wake", "unpause",
                "env", "events", "event", "execution", "executions", "job", "jobs", "checkpoint", "ckpt",
                "snapshot", "snap", "snapshots", "runtime", "rt", "fs", "files", "file", "sdk"}


def sdk_core_index() -> str:
    return os.path.join(OFFICIAL_CLI_DIR, "node_modules", "@agentuity", "core", "dist", "index.js")


def sdk_skip_reason() -> str | None:
    """Why the SDK runner cannot run here: node, or @agentuity/core at the CLI's version, missing."""
    if shutil.which("node") is None:
        return "node is not installed (apt-get install nodejs npm; scripts/install-official-cli.sh)"
    try:
        with open(os.path.join(OFFICIAL_CLI_DIR, "node_modules", "@agentuity", "core", "package.json")) as fh:
            version = json.load(fh).get("version")
    except (OSError, ValueError):
        version = None
    if version != OFFICIAL_CLI_VERSION:
        return (f"@agentuity/core {OFFICIAL_CLI_VERSION} is not installed in {OFFICIAL_CLI_DIR} (found {version}): "
                f"run scripts/install-official-cli.sh")
    return None


def sdk_step(argv: list) -> bool:
    """Does the SDK runner drive this command line through the SDK (else localsb runs it)?"""
    return bool(argv) and argv[0] in SDK_COMMANDS and (argv[0] == "sdk" or json_mode(argv))


class SdkSession(Session):
    """Runs each SDK operation with ``node sdk_client.mjs``; every other command line (human
    output, commands the SDK has not) with ``localsb --backend cloud`` on the same organization, so
    the scenario's state is the same as on the other runners. ``sdk_steps`` counts the former."""

    def __init__(self, *args, localsb_prefix: list, **kw):
        super().__init__(*args, **kw)
        self.localsb_prefix = localsb_prefix
        self.sdk_steps = 0
        self.delegated = 0

    def run(self, argv: list, *, stdin: bytes | None = None, env: dict | None = None,
            timeout: float = COMMAND_TIMEOUT, group: str | None = None) -> Result:
        if sdk_step(argv) and stdin is None:
            res = super().run(argv, env=env, timeout=timeout)
            if res.rc not in (SDK_UNSUPPORTED, SDK_API_ERROR):
                self.sdk_steps += 1
                return res
        self.delegated += 1
        saved = self.prefix
        self.prefix = self.localsb_prefix
        try:
            return super().run(argv, stdin=stdin, env=env, timeout=timeout, group=group)
        finally:
            self.prefix = saved

    def start(self, name: str, argv: list, *, env: dict | None = None) -> None:
        saved = self.prefix
        self.prefix = self.localsb_prefix
        try:
            super().start(name, argv, env=env)
        finally:
            self.prefix = saved


class SdkRunner(_MockcloudRunner):
    """The official TypeScript SDK (@agentuity/core at the CLI's version, on node) against
    mockcloud: sdk_client.mjs does each operation the SDK has through SandboxClient and the SDK's
    service functions (zod-parsed answers) and prints the official CLI's --json output of it."""

    name = kind = "sdk"

    def skip_reason(self) -> str | None:
        return sdk_skip_reason()

    def open(self, scenario: str, shared: bool = False) -> Session:
        work = self._workdir(scenario)
        key, client = self._org_env(scenario)
        env = _base_env(os.path.join(work, ".home"))
        os.makedirs(env["HOME"])
        env.update(client, LOCALSB_BACKEND="cloud", NO_PROXY="127.0.0.1,localhost")
        self._python_env(env)
        s = SdkSession(self, scenario, work, env, ["node", SDK_CLIENT, sdk_core_index()],
                       localsb_prefix=[sys.executable, "-m", "localsb", "cloud", "sandbox"])
        s.context = {key["orgName"]: "<org-name>", self.server.url: "<api-url>", work: "<cwd>"}
        return s


class HostedRunner(OfficialRunner):
    """The official CLI against the real hosted service, for checking mockcloud against the
    original. Enabled only by AGENTUITY_REAL_API_KEY (never in CI; see conformance/README.md).
    There are no per-scenario organizations there: sandboxes the scenario printed are deleted."""

    name = "hosted"
    kind = "official"

    def __init__(self, environ=None):
        self.environ = os.environ if environ is None else environ

    @staticmethod
    def enabled(environ=None) -> bool:
        return bool((os.environ if environ is None else environ).get("AGENTUITY_REAL_API_KEY"))

    def hosted_env(self) -> dict:
        e = self.environ
        env = {"AGENTUITY_API_KEY": e["AGENTUITY_REAL_API_KEY"],
               "AGENTUITY_REGION": e.get("AGENTUITY_REAL_REGION", "usc")}
        if e.get("AGENTUITY_REAL_ORG_ID"):
            env["AGENTUITY_CLOUD_ORG_ID"] = e["AGENTUITY_REAL_ORG_ID"]
        for var in ("API_URL", "CATALYST_URL", "STREAM_URL"):
            if e.get(f"AGENTUITY_REAL_{var}"):
                env[f"AGENTUITY_{var}"] = e[f"AGENTUITY_REAL_{var}"]
        return env

    def open(self, scenario: str, shared: bool = False) -> Session:
        work = self._workdir(scenario)
        env = self._env(work)
        env.update(self.hosted_env())
        s = Session(self, scenario, work, env, [os.path.join(official_bin(), "agentuity"), "cloud", "sandbox"])
        s.context = {work: "<cwd>"}
        if self.environ.get("AGENTUITY_REAL_ORG_NAME"):
            s.context[self.environ["AGENTUITY_REAL_ORG_NAME"]] = "<org-name>"
        return s

    def cleanup(self, session: Session) -> None:
        destroy_sandboxes(session.env, session.sandboxes)


# --- mockcloud and teardown ---------------------------------------------------------------------

class Mockcloud:
    """The session's mockcloud: ``mockcloud serve --port 0`` on a temporary state directory (its
    engine state inside it), and organization keys made on demand, one per (runner, scenario)."""

    def __init__(self, state_dir: str | None = None):
        self.state_dir = state_dir or suite_dir("lsbtest-conf-mockcloud-")
        self.engine_state = os.path.join(self.state_dir, "engine")
        self._keys: dict[str, dict] = {}
        self.proc = None

    @property
    def url(self) -> str:
        return self.proc.url

    def start(self, serve_argv: list | None = None) -> "Mockcloud":
        """``serve_argv`` replaces ``python3 -m mockcloud serve`` (the self-check's mutated server)."""
        from mockcloud.testing import ServerProcess

        class Server(ServerProcess):
            def _cmd(self, *args):
                if serve_argv and args and args[0] == "serve":
                    return [*serve_argv, *args[1:]]
                return super()._cmd(*args)

        self.proc = Server(self.state_dir, engine_state=self.engine_state)
        self.proc.start()
        return self

    def org_key(self, org: str) -> dict:
        """A key of organization ``org`` (made, with the org, on first use)."""
        if org not in self._keys:
            from mockcloud.store import Store
            store = Store(self.state_dir)
            try:
                self._keys[org] = store.key_create(org)
            finally:
                store.close()
        return self._keys[org]

    def client_env(self, key: dict) -> dict:
        return self.proc.client_env(key)

    def log(self) -> str:
        return self.proc.log() if self.proc else ""

    def stop(self) -> None:
        """Stop the server, destroy what its engine still runs, unmount its pool, remove it all."""
        try:
            if self.proc is not None:
                self.proc.stop()
        finally:
            try:
                teardown_engine_state(self.engine_state)
            finally:
                shutil.rmtree(self.state_dir, ignore_errors=True)


def teardown_engine_state(state_dir: str) -> None:
    """Destroy every sandbox of an engine state directory, unmount its pool, remove it."""
    try:
        if os.path.isdir(state_dir):
            from localsb.engine import Engine
            eng = Engine(state_dir)
            try:
                rows = eng.store.all("SELECT id FROM sandboxes WHERE status NOT IN ('deleted','terminated','failed')")
                for row in rows:
                    try:
                        eng.sandbox_destroy(row["id"])
                    except Exception:  # noqa: BLE001 - teardown goes on with the others
                        pass
                eng.repair()
            finally:
                eng.close()
    except Exception:  # noqa: BLE001 - a state dir the engine cannot open still gets unmounted
        pass
    try:
        _close_pool(state_dir)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def _close_pool(state_dir: str, patience: float = 15.0) -> None:
    """close_pool, retried: a sandbox's last process may hold the pool's loop device for a
    moment after its supervisor ended (the unmount is lazy then, and the device goes with it)."""
    from localsb.linux.storage import close_pool
    deadline = time.monotonic() + patience
    while True:
        try:
            close_pool(state_dir, force=True)
            return
        except Exception:  # noqa: BLE001 - HostError while a loop device is still held
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


SUITE_DIRS: list = []    # the directories this run of the suite made (other runs may share the machine)


def suite_dir(prefix: str) -> str:
    """A new directory /tmp/<prefix>XXXX, recorded as this run's (leaked_resources looks only there)."""
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    SUITE_DIRS.append(d)
    return d


def _ours(text: str) -> bool:
    return any(d + "/" in text + "/" for d in SUITE_DIRS)


def leaked_resources() -> dict:
    """Mounts and loop devices of this run's own directories still present (another run of the
    suite on the same machine has its own, which are not our leaks)."""
    with open("/proc/self/mountinfo") as fh:
        mounts = sorted({line.split()[4] for line in fh if _ours(line.split()[4])})
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    loops = sorted(line.split(":")[0] for line in out.splitlines() if _ours(line.split("(", 1)[-1].rstrip(")")))
    return {k: v for k, v in (("mounts", mounts), ("loop devices", loops)) if v}


def destroy_engine_sandboxes(state_dir: str, ids: list) -> None:
    """Destroy the given sandboxes of an engine state directory that others also use."""
    from localsb.engine import Engine
    eng = Engine(state_dir)
    try:
        for sid in ids:
            try:
                eng.sandbox_destroy(sid)
            except Exception:  # noqa: BLE001 - already gone (one-shot), or never made
                pass
    finally:
        eng.close()


def prebuild_runtimes(state_dir: str, names) -> dict:
    """Build runtime images in an engine state directory ahead of first use: name -> error text
    or None. (The scenarios that use them wait on the engine's build lock if they come first.)"""
    from localsb.engine import Engine
    done = {}
    eng = Engine(state_dir)
    try:
        for name in names:
            try:
                eng.runtime_build(name)
                done[name] = None
            except Exception as e:  # noqa: BLE001 - the scenario that needs it reports the failure
                done[name] = f"{type(e).__name__}: {e}"
    finally:
        eng.close()
    return done


def destroy_org_sandboxes(env: dict) -> None:
    """Delete every live sandbox of the org a client environment names (through the API)."""
    from localsb.backends.cloud import CloudBackend
    be = CloudBackend.from_env(env)
    try:
        for sb in be.sandbox_list(limit=100).get("sandboxes", []):
            if sb.get("status") not in ("terminated", "failed", "deleted"):
                try:
                    be.sandbox_destroy(sb["id"])
                except Exception:  # noqa: BLE001
                    pass
    except Exception:  # noqa: BLE001 - the server may be the thing that failed
        pass
    finally:
        be.close()


def destroy_sandboxes(env: dict, ids: list) -> None:
    from localsb.backends.cloud import CloudBackend
    be = CloudBackend.from_env(env)
    try:
        for sid in ids:
            try:
                be.sandbox_destroy(sid)
            except Exception:  # noqa: BLE001 - already gone, or never made
                pass
    finally:
        be.close()
