"""The client side of `snapshot build`: read the build file, resolve its globs, hash the content.

The official CLI does this work on the client (reference/hosted-api.md §5), and so does localsb:
``load_build()`` returns a ``SnapshotBuild`` that a backend's ``snapshot_build(build)`` consumes
by its attributes and methods (``init_body()``, ``finalize_body()``, ``write_archive(fh)``), without
importing this module. YAML is parsed with PyYAML, imported only for a .yaml/.yml build file.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field

from localsb.api.errors import ValidationError
from localsb.api.models import APT_PACKAGE_RE, NPM_PACKAGE_RE, SNAPSHOT_NAME_RE, validate_tag

from .errors import LocalFileError

BUILD_FILES = ("agentuity-snapshot.yaml", "agentuity-snapshot.yml", "agentuity-snapshot.json")
_VAR_RE = re.compile(r"\$\{([^}]+)\}")
# Bun's MIME guesses for common source files (part of the content hash, so they must match).
_MIME = {".js": "text/javascript;charset=utf-8", ".mjs": "text/javascript;charset=utf-8",
         ".cjs": "text/javascript;charset=utf-8", ".ts": "text/javascript;charset=utf-8",
         ".tsx": "text/javascript;charset=utf-8", ".jsx": "text/javascript;charset=utf-8",
         ".json": "application/json;charset=utf-8", ".txt": "text/plain;charset=utf-8",
         ".md": "text/markdown;charset=utf-8", ".html": "text/html;charset=utf-8",
         ".css": "text/css;charset=utf-8", ".py": "text/x-python;charset=utf-8",
         ".sh": "application/x-sh", ".yaml": "text/yaml;charset=utf-8", ".yml": "text/yaml;charset=utf-8",
         ".toml": "application/toml", ".svg": "image/svg+xml", ".png": "image/png",
         ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".wasm": "application/wasm"}


@dataclass
class BuildFile:
    path: str          # relative to the build directory, forward slashes
    local_path: str
    size: int
    sha256: str
    content_type: str
    mode: int          # stat.st_mode & 0o7777

    def to_wire(self) -> dict:
        return {"path": self.path, "size": self.size, "sha256": self.sha256,
                "contentType": self.content_type, "mode": self.mode}


@dataclass
class SnapshotBuild:
    directory: str
    build_file: str
    runtime: str
    name: str | None = None
    description: str | None = None
    tag: str = "latest"
    message: str | None = None
    dependencies: list = field(default_factory=list)
    packages: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    files: list = field(default_factory=list)
    content_hash: str = ""
    force: bool = False
    public: bool = False

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def file_count(self) -> int:
        return len(self.files)

    def init_body(self) -> dict:
        """POST /sandbox/snapshots/build body (without 'encrypt', which is the client's choice)."""
        body = {"runtime": self.runtime}
        for key in ("name", "description", "message"):
            if getattr(self, key):
                body[key] = getattr(self, key)
        body["tag"] = self.tag
        body["contentHash"] = self.content_hash
        if self.force:
            body["force"] = True
        body["public"] = self.public
        return body

    def finalize_body(self) -> dict:
        body = {"sizeBytes": self.size_bytes, "fileCount": self.file_count,
                "files": [f.to_wire() for f in self.files]}
        for key in ("dependencies", "packages", "env", "metadata"):
            if getattr(self, key):
                body[key] = getattr(self, key)
        return body

    # Backends may also take the build as a mapping (the cloud backend does): "init" is the
    # build-init body, "archive" the tar.gz bytes, "finalize" the finalize body.
    def __getitem__(self, key: str):
        if key == "init":
            return self.init_body()
        if key == "finalize":
            return self.finalize_body()
        if key == "archive":
            import io
            buf = io.BytesIO()
            self.write_archive(buf)
            return buf.getvalue()
        raise KeyError(key)

    def get(self, key: str, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def write_archive(self, fileobj) -> None:
        """The tar.gz the official CLI uploads: the files at their relative paths, or an empty
        `.placeholder` when there are none."""
        import io
        import tarfile
        with tarfile.open(fileobj=fileobj, mode="w:gz") as tar:
            if not self.files:
                info = tarfile.TarInfo(".placeholder")
                tar.addfile(info, io.BytesIO(b""))
            for f in self.files:
                tar.add(f.local_path, arcname=f.path, recursive=False)


def parse_pairs(values, what: str = "KEY=VALUE") -> dict:
    pairs = {}
    for v in values or ():
        if "=" not in v:
            raise ValidationError(f'Invalid {what} format: "{v}"')
        k, val = v.split("=", 1)
        if not k:
            raise ValidationError(f'Invalid {what} format: "{v}" (empty key)')
        pairs[k] = val
    return pairs


def find_build_file(directory: str, file: str | None) -> str:
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise LocalFileError(f"Directory not found: {directory}")
    if file:
        # --file is resolved against the working directory, not <directory> (as the official CLI).
        path = os.path.abspath(file)
        if not os.path.isfile(path):
            raise LocalFileError(f"Build file not found: {path}")
        return path
    for name in BUILD_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise LocalFileError(f"No build file found. Expected one of: {', '.join(BUILD_FILES)} in {directory}")


def read_build_file(path: str) -> dict:
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".yaml", ".yml", ".json"):
        raise ValidationError(f"Unsupported build file extension: {ext}. Use .yaml, .yml, or .json")
    with open(path, "rb") as fh:
        text = fh.read().decode("utf-8", "replace")
    try:
        if ext == ".json":
            import json
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parser failure is the same one-line error
        raise ValidationError(f"Failed to parse build file: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    if not isinstance(data, dict):
        raise ValidationError(f"Invalid build file at {path}: root: expected an object")
    return data


def _check_schema(data: dict, path: str) -> None:
    issues = []

    def bad(where, message):
        issues.append(f"{where}: {message}")

    if data.get("version") != 1:
        bad("version", "must be 1")
    if not isinstance(data.get("runtime"), str) or not data.get("runtime"):
        bad("runtime", "required: a runtime name like bun:1 or python:3.14")
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or not SNAPSHOT_NAME_RE.match(name)):
        bad("name", "must only contain letters, numbers, underscores, and dashes")
    for key in ("description", "dir"):
        if data.get(key) is not None and not isinstance(data.get(key), str):
            bad(key, "must be a string")
    for key, rx in (("dependencies", APT_PACKAGE_RE), ("packages", NPM_PACKAGE_RE), ("files", None)):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, list):
            bad(key, "must be a list of strings")
            continue
        for i, item in enumerate(value):
            if not isinstance(item, str) or (rx is not None and not rx.match(item)):
                bad(f"{key}.{i}", f"invalid entry {item!r}")
    for key in ("env", "metadata"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            bad(key, "must be a map of strings")
            continue
        for k, v in value.items():
            if not isinstance(v, str):
                bad(f"{key}.{k}", "must be a string")
    if data.get("public") is not None and not isinstance(data.get("public"), bool):
        bad("public", "must be true or false")
    if issues:
        raise ValidationError(f"Invalid build file at {path}: " + "; ".join(issues))
    if not any(data.get(k) for k in ("dependencies", "files", "env", "packages")):
        raise ValidationError("At least one of dependencies, files, env, or packages must be specified")


def substitute(values: dict, variables: dict, flag: str = "env") -> dict:
    """${VAR} in the values only, from the --env (or --metadata) pairs; undefined is an error
    naming the flag that would define it."""
    out = {}
    for key, value in values.items():
        def repl(m, key=key):
            name = m.group(1)
            if name not in variables:
                raise ValidationError(f'Variable "${{{name}}}" in "{key}" is not defined. '
                                      f"Use --{flag} {name}=value to provide it.")
            return variables[name]
        out[key] = _VAR_RE.sub(repl, value)
    return out


def _expand_braces(pattern: str) -> list[str]:
    """Bun.Glob's {a,b} alternatives, which gitignore-style matching lacks: expand them first."""
    depth, start = 0, -1
    for i, c in enumerate(pattern):
        if c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}" and depth:
            depth -= 1
            if depth == 0:
                body, alts, level, last = pattern[start + 1:i], [], 0, 0
                for k, ch in enumerate(body):
                    if ch == "{":
                        level += 1
                    elif ch == "}":
                        level -= 1
                    elif ch == "," and level == 0:
                        alts.append(body[last:k])
                        last = k + 1
                alts.append(body[last:])
                if len(alts) == 1:
                    return [pattern]
                return [x for alt in alts for x in _expand_braces(pattern[:start] + alt + pattern[i + 1:])]
    return [pattern]


def _pathspec(patterns):
    """Patterns are relative to the build directory (Bun.Glob with cwd=directory): anchor each one."""
    import pathspec
    lines = []
    for p in patterns:
        for e in _expand_braces(p[2:] if p.startswith("./") else p):
            lines.append(e if e.startswith("/") else "/" + e)
    return pathspec.PathSpec.from_lines("gitignore", lines)


def resolve_globs(root: str, patterns) -> list[str]:
    """Regular files under ``root`` matching an inclusion and no exclusion ('!'); exclusions win."""
    include = _pathspec([p for p in patterns if not p.startswith("!")])
    excl = []
    for p in patterns:
        if p.startswith("!"):
            pat = p[1:]
            if os.path.isdir(os.path.join(root, pat)):
                pat = pat + ("**" if pat.endswith("/") else "/**")
            excl.append(pat)
    exclude = _pathspec(excl)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.isfile(full):
                continue
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if include.match_file(rel) and not exclude.match_file(rel):
                found.append(rel)
    return sorted(found)


def content_type(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext in _MIME:
        return _MIME[ext]
    import mimetypes
    guess = mimetypes.guess_type(path)[0]
    if guess and guess.startswith("text/"):
        return guess + ";charset=utf-8"
    return guess or "application/octet-stream"


def content_hash(b: SnapshotBuild) -> str:
    """SHA-256 over the lines of reference §5.5; name, tag, metadata, packages are not hashed."""
    lines = [f"runtime:{b.runtime}"]
    if b.description:
        lines.append(f"description:{b.description}")
    if b.dependencies:
        lines.append("dependencies:" + ",".join(sorted(b.dependencies)))
    for f in sorted(b.files, key=lambda f: f.path):
        lines.append(f"file:{f.path}:{f.size}:{f.sha256}:{f.mode:04o}:{f.content_type}")
    for k in sorted(b.env):
        lines.append(f"env:{k}={b.env[k]}")
    return hashlib.sha256("".join(line + "\n" for line in lines).encode()).hexdigest()


def load_build(directory: str, file: str | None = None, *, tag: str | None = None, name: str | None = None,
               description: str | None = None, message: str | None = None, env_pairs=(),
               metadata_pairs=(), force: bool = False, public: bool = False) -> SnapshotBuild:
    env_vars = parse_pairs(env_pairs)
    meta_vars = parse_pairs(metadata_pairs)
    if tag is not None:
        validate_tag(tag)
    path = find_build_file(directory, file)
    data = read_build_file(path)
    _check_schema(data, path)
    if name is not None and not SNAPSHOT_NAME_RE.match(name):
        raise ValidationError("Invalid snapshot name: must only contain letters, numbers, underscores, and dashes")
    root = os.path.abspath(directory)
    if data.get("dir"):
        root = os.path.normpath(os.path.join(root, data["dir"]))
        if not os.path.isdir(root):
            raise LocalFileError(f"Directory not found: {root}")
    files = []
    for rel in resolve_globs(root, data.get("files") or []):
        full = os.path.join(root, rel)
        st = os.stat(full)
        h = hashlib.sha256()
        with open(full, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        files.append(BuildFile(rel, full, st.st_size, h.hexdigest(), content_type(rel), st.st_mode & 0o7777))
    b = SnapshotBuild(
        directory=root, build_file=path, runtime=data["runtime"], name=name or data.get("name"),
        description=description or data.get("description"), tag=tag or "latest", message=message,
        dependencies=list(data.get("dependencies") or []), packages=list(data.get("packages") or []),
        env=substitute(data.get("env") or {}, env_vars),
        metadata=substitute(data.get("metadata") or {}, meta_vars, "metadata"),
        files=files, force=force, public=public or bool(data.get("public")))
    b.content_hash = content_hash(b)
    return b
