"""Scenarios: loading and validating them, running one on a runner's session, and checking the
outcome against the scenario's expectations and against the reference runner (local).

A scenario file (conformance/scenarios/*.yaml) holds ``scenarios:``, a list of:

    name: lifecycle-basic             # unique; the report's row
    description: ...
    examples: [...]                   # product-doc example lines this scenario runs, verbatim
    internet: why                     # needs the internet: skipped on every runner (still listed)
    requires: [network]               # features localsb does not have yet (FEATURES below):
    when_unavailable: [steps]         #   while one is off, these steps run instead of `steps`
    files: {path: content}            # made in each runner's working directory first;
                                      #   content: text, or {tar: {member: text}}, {zip: {...}}
    steps: [step, ...]

A step:

    cmd: exec $SBX -- sh -c 'exit 3'  # words after `cloud sandbox` (shell-split); $NAME = a capture
    group: sb                         # say `cloud sb` instead of `cloud sandbox`
    save_stdout: file                 # write the raw stdout to a file of the working directory
    stdin: text                       # piped to the command (default /dev/null)
    env: {K: V}                       # extra environment for this command
    exit: 3                           # expected exit code (default 0)
    stdout: text | stderr: text       # expected normalised text (trailing newlines ignored)
    stdout_has: [..] | stderr_has: [..] | stdout_lacks: [..] | stderr_lacks: [..]
    json: shape | stderr_json: shape  # expected JSON (see match_shape)
    capture: {SBX: sandboxId}         # a dotted path into stdout's JSON, or "stderr:<regex>"
    vary: [keys] | vary_text: [regex] # values that legitimately vary from run to run
    files: {path: text | null | {tar: [members]} | {contains: text}}   # local files afterwards
    poll: 10                          # re-run (up to N seconds) until the expectations hold
    background: NAME                  # start the command and go on; a later `wait: NAME` step
    wait: NAME                        #   collects it and checks the expectations given there
    sleep: 1.5                        # a pause, on its own
    local: | cloud: | official:       # per-runner: {skip: why} or overrides of the keys above,
                                      #   with differs: [exit, stdout, stderr] and why: <topic>

Every runner's normalised exit code, stdout and stderr are compared with the reference runner's
(local, or cloud where local skips the step); a field may differ only when the runner's block
lists it in ``differs`` with a ``why`` naming a row of docs/divergences.md.
"""
from __future__ import annotations

import base64
import difflib
import io
import json
import os
import re
import shlex
import tarfile
import time
import zipfile
from dataclasses import dataclass, field

import yaml

from .normalize import Normalizer

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIO_DIR = os.path.join(HERE, "scenarios")
DIVERGENCES = os.path.join(os.path.dirname(HERE), "docs", "divergences.md")

RUNNER_KINDS = ("local", "cloud", "official", "sdk")
# The SDK runner runs what the SDK has not with localsb --backend cloud: a step without an `sdk:`
# block takes the cloud runner's.
KIND_FALLBACK = {"sdk": "cloud"}


def runner_block(step: dict, kind: str) -> dict:
    """The step's block for a runner kind (``sdk`` falls back to ``cloud``'s)."""
    block = step.get(kind)
    if block is None and kind in KIND_FALLBACK:
        block = step.get(KIND_FALLBACK[kind])
    return block or {}
FIELDS = ("exit", "stdout", "stderr")

# Features that reached localsb after the rest. A scenario that needs one runs its
# `when_unavailable` steps (the clear "not available yet" error) while the feature is off here;
# switch it on when it lands (or try with LOCALSB_CONFORMANCE_FEATURES=network,port).
FEATURES = {"network": True, "port": True, "runtimes": True, "dependency": True}
KNOWN_FEATURES = tuple(FEATURES)
# Features whose first use builds something big (a runtime image, an apt layer): scenarios that
# need them share one engine state directory on every runner, so each build happens once.
HEAVY_FEATURES = ("runtimes", "dependency")
# Runtimes those scenarios use, built in the background when the session starts.
PREBUILD_RUNTIMES = ("bun:1",)


def enabled_features(environ=None) -> frozenset:
    environ = os.environ if environ is None else environ
    extra = {f.strip() for f in environ.get("LOCALSB_CONFORMANCE_FEATURES", "").split(",") if f.strip()}
    return frozenset({f for f, on in FEATURES.items() if on} | extra)


SCENARIO_KEYS = {"name", "description", "examples", "internet", "requires", "when_unavailable", "files",
                 "steps"}
EXPECT_KEYS = {"exit", "stdout", "stderr", "stdout_has", "stderr_has", "stdout_lacks", "stderr_lacks",
               "json", "stderr_json", "files"}
STEP_KEYS = EXPECT_KEYS | {"cmd", "stdin", "env", "capture", "vary", "vary_text", "drop", "drop_lines", "why",
                           "poll", "background", "wait", "sleep", "note", "group", "save_stdout", "http"} | set(RUNNER_KINDS)
RUNNER_KEYS = EXPECT_KEYS | {"skip", "differs", "why", "env", "vary", "vary_text", "drop", "drop_lines", "cmd",
                             "note"}
VAR_RE = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)\}?")


@dataclass
class Scenario:
    name: str
    file: str
    description: str = ""
    examples: list = field(default_factory=list)
    internet: str | None = None
    requires: list = field(default_factory=list)
    when_unavailable: list | None = None
    files: dict = field(default_factory=dict)
    steps: list = field(default_factory=list)

    def active_steps(self, features: frozenset | None = None) -> list:
        features = enabled_features() if features is None else features
        if all(f in features for f in self.requires):
            return self.steps
        return self.when_unavailable or []

    @property
    def heavy(self) -> bool:
        return any(f in HEAVY_FEATURES for f in self.requires)

    def captures(self) -> set:
        names = set()
        for st in self.steps + (self.when_unavailable or []):
            names.update((st.get("capture") or {}).keys())
        return names


def load_all(directory: str = SCENARIO_DIR) -> list[Scenario]:
    found, seen = [], {}
    for fname in sorted(os.listdir(directory)):
        if not fname.endswith((".yaml", ".yml")):
            continue
        path = os.path.join(directory, fname)
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
        for raw in doc.get("scenarios") or []:
            unknown = set(raw) - SCENARIO_KEYS
            if unknown:
                raise ValueError(f"{fname}: scenario {raw.get('name')!r}: unknown keys {sorted(unknown)}")
            s = Scenario(file=fname, **{k: v for k, v in raw.items()})
            s.examples = s.examples or []
            s.requires = s.requires or []
            s.steps = s.steps or []
            if s.name in seen:
                raise ValueError(f"{fname}: scenario name {s.name!r} is also in {seen[s.name]}")
            seen[s.name] = fname
            found.append(s)
    return found


def divergence_topics(path: str = DIVERGENCES) -> list[str]:
    """The first cell of each row of docs/divergences.md's table."""
    topics = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("|") and not line.startswith("|---"):
                cell = line.strip().strip("|").split("|")[0].strip().strip("`")
                if cell and cell != "Topic":
                    topics.append(cell)
    return topics


def _topic_ok(why: str, topics: list[str]) -> bool:
    w = why.replace("`", "").strip().lower()
    return any(w.startswith(t.replace("`", "").strip().lower()) for t in topics)


def validate(s: Scenario, topics: list[str] | None = None) -> list[str]:
    """Problems of a scenario's form (unknown keys, differences without a documented reason)."""
    topics = divergence_topics() if topics is None else topics
    errs = []
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", s.name or ""):
        errs.append(f"{s.name!r}: names are lower-case words joined by '-'")
    for f in s.requires:
        if f not in KNOWN_FEATURES:
            errs.append(f"{s.name}: unknown feature {f!r} (known: {', '.join(KNOWN_FEATURES)})")
    if s.requires and not s.when_unavailable:
        errs.append(f"{s.name}: requires {s.requires} but has no when_unavailable steps")
    if not s.steps and not s.internet:
        errs.append(f"{s.name}: no steps")
    for label, steps in (("steps", s.steps), ("when_unavailable", s.when_unavailable or [])):
        for i, st in enumerate(steps, 1):
            where = f"{s.name} {label}[{i}]"
            if not isinstance(st, dict):
                errs.append(f"{where}: a step is a mapping")
                continue
            unknown = set(st) - STEP_KEYS
            if unknown:
                errs.append(f"{where}: unknown keys {sorted(unknown)}")
            if not any(k in st for k in ("cmd", "wait", "sleep", "http")):
                errs.append(f"{where}: needs cmd, wait, sleep or http")
            if "background" in st and "cmd" not in st:
                errs.append(f"{where}: background needs cmd")
            if (st.get("drop") or st.get("drop_lines")) and not (
                    isinstance(st.get("why"), str) and _topic_ok(st["why"], topics)):
                errs.append(f"{where}: drop/drop_lines need a why that starts with a docs/divergences.md topic")
            for kind in RUNNER_KINDS:
                block = st.get(kind)
                if block is None:
                    continue
                if not isinstance(block, dict):
                    errs.append(f"{where}.{kind}: a mapping")
                    continue
                bad = set(block) - RUNNER_KEYS
                if bad:
                    errs.append(f"{where}.{kind}: unknown keys {sorted(bad)}")
                for fld in block.get("differs") or []:
                    if fld not in FIELDS:
                        errs.append(f"{where}.{kind}: differs names {fld!r}, not one of {FIELDS}")
                for reason_key in ("differs", "skip", "drop", "drop_lines"):
                    if block.get(reason_key) is None:
                        continue
                    why = block.get("skip") if reason_key == "skip" else block.get("why")
                    if not isinstance(why, str) or not _topic_ok(why, topics):
                        errs.append(f"{where}.{kind}: {reason_key} needs a reason that starts with a "
                                    f"docs/divergences.md topic (got {why!r})")
    return errs


# --- expectations --------------------------------------------------------------------------------

TYPES = {
    "<str>": lambda v: isinstance(v, str), "<int>": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "<num>": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "<bool>": lambda v: isinstance(v, bool), "<null>": lambda v: v is None, "<any>": lambda v: True,
    "<list>": lambda v: isinstance(v, list), "<dict>": lambda v: isinstance(v, dict),
    "<str|null>": lambda v: v is None or isinstance(v, str),
    "<int|null>": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "<nonempty>": lambda v: bool(v),
}


def match_shape(expected, actual, path: str = "$") -> list[str]:
    """Does normalised JSON ``actual`` have the shape ``expected``?

    A mapping needs its keys (more are allowed unless ``$exact: true``; ``$absent: [k]`` forbids
    keys); a list matches element by element, or ``{$each: shape, $len: n, $min: n}``; the strings
    <str> <int> <num> <bool> <null> <any> <list> <dict> <str|null> <int|null> <nonempty> match a
    type; anything else must be equal (placeholders such as <sbx:1> and <time> included).
    """
    errs: list[str] = []
    if isinstance(expected, dict) and any(k in expected for k in ("$each", "$len", "$min", "$contains")):
        if not isinstance(actual, list):
            return [f"{path}: expected a list, got {json.dumps(actual)[:200]}"]
        if "$len" in expected and len(actual) != expected["$len"]:
            errs.append(f"{path}: expected {expected['$len']} items, got {len(actual)}")
        if "$min" in expected and len(actual) < expected["$min"]:
            errs.append(f"{path}: expected at least {expected['$min']} items, got {len(actual)}")
        if "$each" in expected:
            for i, item in enumerate(actual):
                errs += match_shape(expected["$each"], item, f"{path}[{i}]")
        for want in expected.get("$contains", []):
            if not any(not match_shape(want, item) for item in actual):
                errs.append(f"{path}: no item matches {json.dumps(want)}")
        return errs
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {json.dumps(actual)[:200]}"]
        # "$$name" stands for a key that itself starts with "$" ("$schema").
        keys = {(k[1:] if k.startswith("$$") else k): v for k, v in expected.items()
                if not k.startswith("$") or k.startswith("$$")}
        for k, v in keys.items():
            if k not in actual:
                errs.append(f"{path}: missing key {k!r} (has {sorted(actual)})")
            else:
                errs += match_shape(v, actual[k], f"{path}.{k}")
        for k in expected.get("$absent", []):
            if k in actual:
                errs.append(f"{path}: key {k!r} should be absent")
        if expected.get("$exact"):
            extra = set(actual) - set(keys)
            if extra:
                errs.append(f"{path}: unexpected keys {sorted(extra)}")
        return errs
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: expected a list, got {json.dumps(actual)[:200]}"]
        if len(expected) != len(actual):
            errs.append(f"{path}: expected {len(expected)} items, got {len(actual)}")
        for i, (e, a) in enumerate(zip(expected, actual)):
            errs += match_shape(e, a, f"{path}[{i}]")
        return errs
    if isinstance(expected, str) and expected in TYPES:
        return [] if TYPES[expected](actual) else [f"{path}: expected {expected}, got {json.dumps(actual)}"]
    if expected != actual:
        return [f"{path}: expected {json.dumps(expected, ensure_ascii=False)}, "
                f"got {json.dumps(actual, ensure_ascii=False)}"]
    return []


def effective(step: dict, kind: str) -> dict:
    """The step's expectations for one runner kind: the step's, with the runner's block over them.
    A field the runner ``differs`` on loses the step's expectations for it."""
    block = runner_block(step, kind)
    eff = {k: step[k] for k in EXPECT_KEYS if k in step}
    for fld in block.get("differs") or []:
        for k in {"exit": ("exit",), "stdout": ("stdout", "stdout_has", "stdout_lacks", "json"),
                  "stderr": ("stderr", "stderr_has", "stderr_lacks", "stderr_json")}[fld]:
            eff.pop(k, None)
    eff.update({k: block[k] for k in EXPECT_KEYS if k in block})
    eff.setdefault("exit", 0)
    return eff


def _as_text(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, indent=2)


def check_expectations(eff: dict, norm: dict, workdir: str | None) -> list[str]:
    errs = []
    if norm["exit"] != eff["exit"]:
        errs.append(f"exit code {norm['exit']}, expected {eff['exit']}")
    for fld in ("stdout", "stderr"):
        got = norm[fld]
        if fld in eff:
            want = eff[fld]
            if isinstance(want, str):
                if _as_text(got).rstrip("\n") != want.rstrip("\n"):
                    errs.append(f"{fld} is not as expected:\n{_diff(want.rstrip(chr(10)), _as_text(got).rstrip(chr(10)), 'expected', 'got')}")
            else:
                errs += [f"{fld}: {e}" for e in match_shape(want, got)]
        for frag in eff.get(f"{fld}_has") or []:
            if frag not in _as_text(got):
                errs.append(f"{fld} lacks {frag!r}:\n{_indent(_as_text(got))}")
        for frag in eff.get(f"{fld}_lacks") or []:
            if frag in _as_text(got):
                errs.append(f"{fld} should not contain {frag!r}:\n{_indent(_as_text(got))}")
    for key, fld in (("json", "stdout"), ("stderr_json", "stderr")):
        if key in eff:
            got = norm[fld]
            if not isinstance(got, (dict, list)):
                errs.append(f"{fld} is not JSON:\n{_indent(_as_text(got))}")
            else:
                errs += [f"{fld} JSON {e}" for e in match_shape(eff[key], got)]
    if workdir is not None:
        for rel, want in (eff.get("files") or {}).items():
            errs += _check_file(os.path.join(workdir, rel), rel, want)
    return errs


def _check_file(path: str, rel: str, want) -> list[str]:
    if want is None:
        return [f"local file {rel} should not exist"] if os.path.exists(path) else []
    if not os.path.exists(path):
        return [f"local file {rel} is missing"]
    if isinstance(want, str):
        if os.path.isdir(path):
            return [f"local {rel} is a directory, expected a file"]
        with open(path, "rb") as fh:
            got = fh.read().decode("utf-8", "replace")
        return [] if got == want else [f"local file {rel}: {got!r}, expected {want!r}"]
    if "dir" in want:
        got = sorted(os.listdir(path)) if os.path.isdir(path) else None
        return [] if got == sorted(want["dir"]) else [f"local dir {rel}: {got}, expected {sorted(want['dir'])}"]
    if "contains" in want:
        with open(path, "rb") as fh:
            got = fh.read().decode("utf-8", "replace")
        return [] if want["contains"] in got else [f"local file {rel} lacks {want['contains']!r}"]
    for kind in ("tar", "zip"):
        if kind in want:
            members = _archive_members(path, kind)
            if members is None:
                return [f"local file {rel} is not a {kind} archive"]
            missing = [m for m in want[kind] if m not in members]
            return [f"local {kind} {rel} lacks {missing} (has {sorted(members)[:40]})"] if missing else []
    return [f"unknown file expectation {want!r}"]


def _archive_members(path: str, kind: str):
    try:
        if kind == "tar":
            with tarfile.open(path, "r:*") as t:
                names = t.getnames()
        else:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
    except (tarfile.TarError, zipfile.BadZipFile, OSError):
        return None
    return {n.lstrip("./").rstrip("/") for n in names} | set(names)


def _indent(text: str, by: str = "    ", limit: int = 3000) -> str:
    if len(text) > limit:
        text = text[:limit] + f"\n... ({len(text) - limit} more characters)"
    return "\n".join(by + line for line in text.split("\n"))


def _diff(a: str, b: str, la: str, lb: str) -> str:
    lines = list(difflib.unified_diff(a.split("\n"), b.split("\n"), la, lb, lineterm="", n=2))
    return _indent("\n".join(lines))


# --- running -------------------------------------------------------------------------------------

@dataclass
class StepRecord:
    index: int
    step: dict
    cmd: str | None = None
    result: object = None           # runners.Result
    norm: dict | None = None        # field -> normalised value
    skipped: str | None = None
    error: str | None = None
    attempts: int = 1
    file_problems: list = field(default_factory=list)   # checked while the working dir exists


@dataclass
class RunRecord:
    scenario: str
    runner: str
    kind: str
    steps: list = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None
    elapsed: float = 0.0
    workdir: str | None = None
    log: str = ""
    sdk_steps: int = 0              # steps the SDK runner did through the SDK


def _materialise(workdir: str, files: dict) -> None:
    for rel, content in (files or {}).items():
        path = os.path.join(workdir, rel)
        os.makedirs(os.path.dirname(path) or workdir, exist_ok=True)
        if rel.endswith("/") or content == {"dir": True}:
            os.makedirs(path, exist_ok=True)
            continue
        if isinstance(content, str):
            data = content.encode()
        elif "base64" in content:
            data = base64.b64decode(content["base64"])
        elif "tar" in content:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as t:
                for name, text in content["tar"].items():
                    raw = text.encode()
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = len(raw), 0o644, 1700000000
                    t.addfile(info, io.BytesIO(raw))
            data = buf.getvalue()
        elif "zip" in content:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                for name, text in content["zip"].items():
                    z.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), text)
            data = buf.getvalue()
        else:
            raise ValueError(f"unknown file content for {rel}: {content!r}")
        with open(path, "wb") as fh:
            fh.write(data)
        if isinstance(content, dict) and content.get("mode"):
            os.chmod(path, int(str(content["mode"]), 8))


def _substitute(text: str, variables: dict, declared: set) -> str:
    def sub(m):
        name = m.group(1)
        if name in variables:
            return variables[name]
        if name in declared:
            raise KeyError(f"${name} is used before a step captured it")
        return m.group(0)     # a shell variable of the command itself ($HOME in sh -c '...')
    return VAR_RE.sub(sub, text)


def _capture(spec: str, result) -> str:
    if isinstance(spec, str) and spec.startswith(("stdout:", "stderr:")):
        stream, _, pattern = spec.partition(":")
        m = re.search(pattern, result.text(stream))
        if not m:
            raise KeyError(f"no match for {pattern!r} in {stream}")
        return m.group(1) if m.groups() else m.group(0)
    value = result.stdout
    for part in str(spec).split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(f"no {spec!r} in stdout {result.raw_stdout[:300]!r}")
    if not isinstance(value, (str, int, float)):
        raise KeyError(f"{spec!r} is not a scalar: {value!r}")
    return str(value)


def _normalise(normalizer: Normalizer, step: dict, block: dict, result) -> dict:
    differs = set(block.get("differs") or [])
    vary = tuple(step.get("vary") or ()) + tuple(block.get("vary") or ())
    vary_text = tuple(step.get("vary_text") or ()) + tuple(block.get("vary_text") or ())
    drop = tuple(step.get("drop") or ()) + tuple(block.get("drop") or ())
    drop_lines = tuple(step.get("drop_lines") or ()) + tuple(block.get("drop_lines") or ())
    norm = {"exit": result.rc}
    # Compared fields share the scenario's numbering; a field that differs on purpose is
    # normalised on a copy, so that ids only it shows do not shift the numbering of later steps.
    for fld in ("stdout", "stderr"):
        n = normalizer.fork() if fld in differs else normalizer
        norm[fld] = n.value(getattr(result, fld), vary, vary_text, drop, drop_lines)
    return norm


def execute(s: Scenario, session, kind: str, features: frozenset | None = None) -> RunRecord:
    """Run scenario ``s`` on an open runner session; never raises for a failing command."""
    rec = RunRecord(s.name, session.runner.name, kind, workdir=session.workdir)
    t0 = time.monotonic()
    normalizer = Normalizer(session.context, getattr(session, "region", None))
    variables: dict[str, str] = {}
    declared = s.captures()
    try:
        _materialise(session.workdir, s.files)
    except Exception as e:  # noqa: BLE001
        rec.error = f"could not make the scenario's files: {e}"
        return rec
    aborted = None
    for i, step in enumerate(s.active_steps(features), 1):
        sr = StepRecord(i, step)
        rec.steps.append(sr)
        block = runner_block(step, kind)
        if aborted:
            sr.skipped = f"not run: {aborted}"
            continue
        if block.get("skip"):
            sr.skipped = block["skip"]
            continue
        if "sleep" in step and not any(k in step for k in ("cmd", "wait", "http")):
            time.sleep(float(step["sleep"]))
            sr.skipped = "sleep"
            continue
        try:
            env = {k: _substitute(str(v), variables, declared) for k, v in
                   {**(step.get("env") or {}), **(block.get("env") or {})}.items()}
            if "wait" in step:
                result = session.wait(step["wait"])
                sr.cmd = " ".join(shlex.quote(a) for a in result.argv)
            elif "http" in step:
                sr.cmd = _substitute(step["http"], variables, declared)
                deadline = time.monotonic() + float(step.get("poll") or 0)
                while True:
                    result = http_get(sr.cmd)
                    if result.rc == 0 or time.monotonic() >= deadline:
                        break
                    sr.attempts += 1
                    time.sleep(0.5)
            else:
                sr.cmd = _substitute(block.get("cmd", step["cmd"]), variables, declared)
                argv = shlex.split(sr.cmd)
                if "background" in step:
                    session.start(step["background"], argv, env=env)
                    sr.skipped = "background"
                    continue
                stdin = step.get("stdin")
                stdin = stdin.encode() if isinstance(stdin, str) else None
                deadline = time.monotonic() + float(step.get("poll") or 0)
                while True:
                    result = session.run(argv, stdin=stdin, env=env, group=step.get("group"))
                    if not step.get("poll") or time.monotonic() >= deadline:
                        break
                    probe = normalizer.fork()
                    probe.seed(sr.cmd)
                    if not check_expectations(effective(step, kind), _normalise(probe, step, block, result),
                                              session.workdir):
                        break
                    sr.attempts += 1
                    time.sleep(0.3)
            sr.result = result
            if step.get("save_stdout"):
                # `snapshot generate > agentuity-snapshot.yaml`: the docs' redirection.
                with open(os.path.join(session.workdir, step["save_stdout"]), "w", encoding="utf-8") as fh:
                    fh.write(result.raw_stdout)
            normalizer.seed(sr.cmd)
            sr.norm = _normalise(normalizer, step, block, result)
            for rel, want in (effective(step, kind).get("files") or {}).items():
                sr.file_problems += _check_file(os.path.join(session.workdir, rel), rel, want)
            for name, spec in (step.get("capture") or {}).items():
                variables[name] = _capture(spec, result)
        except KeyError as e:
            sr.error = f"capture: {e.args[0]}"
            aborted = f"step {i} failed to capture"
        except Exception as e:  # noqa: BLE001 - a harness problem is reported, not raised
            sr.error = f"{type(e).__name__}: {e}"
            aborted = f"step {i} raised"
    rec.elapsed = time.monotonic() - t0
    rec.sdk_steps = getattr(session, "sdk_steps", 0)
    return rec


def http_get(url: str, timeout: float = 5.0):
    """GET ``url`` from this machine (a sandbox's port URL): a Result with rc 0 for a 2xx, the
    HTTP status otherwise (1 when nothing answered), and the body as stdout. ``*.localhost``
    names are sent to 127.0.0.1 with the name in the Host header (not every resolver maps them)."""
    import http.client
    from urllib.parse import urlsplit

    from .runners import Result
    t0 = time.monotonic()
    u = urlsplit(url)
    host = u.hostname or ""
    connect = "127.0.0.1" if host == "localhost" or host.endswith(".localhost") else host
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    try:
        conn = cls(connect, u.port or (443 if u.scheme == "https" else 80), timeout=timeout)
        conn.request("GET", (u.path or "/") + (f"?{u.query}" if u.query else ""), headers={"Host": u.netloc})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        rc = 0 if 200 <= resp.status < 300 else resp.status
        conn.close()
        err = ""
    except (OSError, http.client.HTTPException) as e:
        rc, body, err = 1, "", f"{type(e).__name__}: {e}"
    return Result(["GET", url], rc, body, err, body, err, False, time.monotonic() - t0)


def reference_step(ref: RunRecord | None, index: int) -> StepRecord | None:
    if ref is None or index > len(ref.steps):
        return None
    st = ref.steps[index - 1]
    return st if st.norm is not None else None


def step_problems(rec: RunRecord, ref: RunRecord | None, ref_alt: RunRecord | None = None) -> list:
    """[(StepRecord, [problem lines])] for the steps of a run that have problems: unmet
    expectations, and differences from the reference runner (``ref``: local; ``ref_alt``: cloud,
    for steps local skips or marks as differing) outside the step's declared ``differs``."""
    out = []
    for sr in rec.steps:
        errs = [sr.error] if sr.error else []
        if sr.norm is None:
            if errs:
                out.append((sr, errs))
            continue
        block = runner_block(sr.step, rec.kind)
        errs += check_expectations(effective(sr.step, rec.kind), sr.norm, None) + sr.file_problems
        mine = set(block.get("differs") or [])
        for fld in FIELDS:
            if fld in mine:
                continue
            for ref_rec in (ref, ref_alt):
                if ref_rec is None or ref_rec.runner == rec.runner:
                    continue
                ref_st = reference_step(ref_rec, sr.index)
                if ref_st is None or fld in (runner_block(ref_st.step, ref_rec.kind).get("differs") or []):
                    continue
                a, b = ref_st.norm[fld], sr.norm[fld]
                if a != b:
                    errs.append(f"{fld} differs from {ref_rec.runner}:\n" +
                                (_diff(_as_text(a), _as_text(b), ref_rec.runner, rec.runner) if fld != "exit"
                                 else f"    {ref_rec.runner}: {a}\n    {rec.runner}: {b}"))
                break
        if errs:
            out.append((sr, errs))
    return out


def check(s: Scenario, rec: RunRecord, ref: RunRecord | None, ref_alt: RunRecord | None = None) -> list[str]:
    """Failures of a run, one text per failing step, with the raw output for the reader."""
    problems = [rec.error] if rec.error else []
    for sr, errs in step_problems(rec, ref, ref_alt):
        label = f"step {sr.index} `{sr.cmd or sr.step.get('cmd') or sr.step.get('wait')}`"
        text = f"{label}:\n" + "\n".join(_indent(e, "  ") for e in errs)
        raw = sr.result
        if raw is not None:
            text += (f"\n  raw exit {raw.rc}; stdout:\n{_indent(raw.raw_stdout, '    | ', 1500)}"
                     f"\n  stderr:\n{_indent(raw.raw_stderr, '    | ', 1500)}")
        problems.append(text)
    return problems


# --- product-doc examples -------------------------------------------------------------------------

DOC_ID_RE = re.compile(r"\b(?:sbx|snp|ckpt|job|exec|exe)_[A-Za-z0-9]+")


def example_text(e) -> str:
    """An ``examples:`` entry: the doc's text, or {doc: text, adapted: why it is run differently}."""
    return e if isinstance(e, str) else e["doc"]


def example_argv(text: str) -> tuple[str, list]:
    """('sandbox'|'sb'|'ssh', words after it) of a doc example, ids as <id>, comments and
    redirections left out."""
    text = re.split(r"\s#\s", text)[0]
    text = re.split(r"\s>\s", text)[0]
    words = shlex.split(text)
    if words[:2] != ["agentuity", "cloud"] or len(words) < 3:
        raise ValueError(f"not an 'agentuity cloud ...' command: {text!r}")
    return words[2], [DOC_ID_RE.sub("<id>", w) for w in words[3:]]


def step_argv(step: dict) -> tuple[str, list]:
    """The same for a step: captures ($S) become <id>."""
    words = shlex.split(VAR_RE.sub("<id>", step["cmd"]))
    return step.get("group") or "sandbox", [DOC_ID_RE.sub("<id>", w) for w in words]


def unmatched_examples(s: Scenario) -> list[str]:
    """Examples a scenario claims but none of its steps runs as written."""
    runs = {(g, tuple(a)) for g, a in (step_argv(st) for st in s.steps if "cmd" in st)}
    missing = []
    for e in s.examples:
        if isinstance(e, dict):
            if not e.get("adapted"):
                missing.append(f"{e.get('doc')!r}: a dict example needs 'adapted: why'")
            continue
        group, argv = example_argv(e)
        if (group, tuple(argv)) not in runs:
            missing.append(e)
    return missing


def step_commands(s: Scenario) -> list[list[str]]:
    """Each step's argv with captures left as placeholders (for coverage checks)."""
    out = []
    for st in s.steps + (s.when_unavailable or []):
        if "cmd" in st:
            out.append(shlex.split(VAR_RE.sub("X", st["cmd"])))
    return out
