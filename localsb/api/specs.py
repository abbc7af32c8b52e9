"""The create specification and file entries: ``CreateSpec`` is the one description of a sandbox
to create (the CLI fills it from options, the cloud backend sends ``to_wire()``, mockcloud rebuilds
it with ``from_wire()``, the engine consumes it).

Apart from models.py because dataclasses cost ~5 ms to import: commands that create nothing
(exec, get, list, ...) never load them.
"""
from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field

from .errors import ValidationError
from .models import APT_PACKAGE_RE, NPM_PACKAGE_RE, omit_none
from .limits import check_cpu, check_disk, check_memory, check_timeout
from .units import parse_port


@dataclass
class FileSpec:
    path: str
    content: bytes

    def to_wire(self) -> dict:
        return {"path": self.path, "content": base64.b64encode(self.content).decode()}

    @classmethod
    def from_wire(cls, d: dict) -> "FileSpec":
        if not isinstance(d, dict) or not isinstance(d.get("path"), str) or not d["path"]:
            raise ValidationError("Invalid file entry: each file needs a non-empty 'path'")
        try:
            content = base64.b64decode(d.get("content") or "", validate=True)
        except (ValueError, TypeError):
            raise ValidationError(f"Invalid file entry {d['path']}: content is not valid base64") from None
        return cls(d["path"], content)


@dataclass
class CreateSpec:
    """Everything a sandbox is created from (POST /sandbox body, reference §2.1)."""
    mode: str = "interactive"
    command: list[str] = field(default_factory=list)
    name: str | None = None
    description: str | None = None
    runtime: str | None = None
    runtime_id: str | None = None
    snapshot: str | None = None
    memory: str | None = None
    cpu: str | None = None
    disk: str | None = None
    network: bool = False
    port: int | None = None
    idle_timeout: str | None = None
    execution_timeout: str | None = None
    paused_timeout: str | None = None
    env: dict = field(default_factory=dict)
    files: list[FileSpec] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    metadata: dict | None = None
    scopes: list[str] = field(default_factory=list)
    project_id: str | None = None
    org_id: str | None = None
    timestamps: bool = False

    def validate(self) -> "CreateSpec":
        """Check every field before anything is created; raise ValidationError on the first bad one."""
        if self.mode not in ("oneshot", "interactive"):
            raise ValidationError(f"Invalid mode '{self.mode}': expected oneshot or interactive")
        if self.mode == "oneshot" and not self.command:
            raise ValidationError("No command given: use -- <command> [args...]")
        if self.snapshot and (self.runtime or self.runtime_id):
            raise ValidationError("cannot specify both snapshot and runtime; snapshot includes its own runtime")
        if self.memory is not None:
            check_memory(self.memory)
        if self.cpu is not None:
            check_cpu(self.cpu)
        if self.disk is not None:
            check_disk(self.disk)
        if self.port is not None:
            self.port = parse_port(self.port)
            self.network = True
        for label, value in (("idle timeout", self.idle_timeout), ("timeout", self.execution_timeout),
                             ("paused timeout", self.paused_timeout)):
            if value is not None:
                check_timeout(value, label, zero_means_never=label == "paused timeout")
        for k, v in self.env.items():
            if not isinstance(k, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k) or not isinstance(v, str):
                raise ValidationError(f"Invalid environment variable format: {k}. Use KEY=VALUE format.")
        for dep in self.dependencies:
            if not isinstance(dep, str) or not APT_PACKAGE_RE.match(dep):
                raise ValidationError(f"Invalid apt package name: {dep!r}")
        for pkg in self.packages:
            if not isinstance(pkg, str) or not NPM_PACKAGE_RE.match(pkg):
                raise ValidationError(f"Invalid package name: {pkg!r}")
        if self.metadata is not None and not isinstance(self.metadata, dict):
            raise ValidationError("Metadata must be a valid JSON object")
        if self.name is not None and (not isinstance(self.name, str) or len(self.name) > 128):
            raise ValidationError("Invalid sandbox name: at most 128 characters")
        for f in self.files:
            if not f.path or "\0" in f.path:
                raise ValidationError(f"Invalid file path: {f.path!r}")
        return self

    def resources(self) -> dict:
        return omit_none({"memory": self.memory, "cpu": self.cpu, "disk": self.disk})

    def to_wire(self) -> dict:
        body: dict = {}
        if self.project_id:
            body["projectId"] = self.project_id
        if self.runtime:
            body["runtime"] = self.runtime
        if self.runtime_id:
            body["runtimeId"] = self.runtime_id
        if self.name:
            body["name"] = self.name
        if self.description:
            body["description"] = self.description
        if self.resources():
            body["resources"] = self.resources()
        if self.env:
            body["env"] = dict(self.env)
        if self.network or self.port:
            body["network"] = omit_none({"enabled": True, "port": self.port})
        timeout = omit_none({"idle": self.idle_timeout, "execution": self.execution_timeout,
                             "paused": self.paused_timeout})
        if timeout:
            body["timeout"] = timeout
        if self.mode == "oneshot":
            body["stream"] = {"timestamps": bool(self.timestamps)}
            body["command"] = {"exec": list(self.command), "mode": "oneshot"}
            if self.files:
                body["command"]["files"] = [f.to_wire() for f in self.files]
        elif self.files:
            body["files"] = [f.to_wire() for f in self.files]
        if self.snapshot:
            body["snapshot"] = self.snapshot
        if self.dependencies:
            body["dependencies"] = list(self.dependencies)
        if self.packages:
            body["packages"] = list(self.packages)
        if self.metadata is not None:
            body["metadata"] = self.metadata
        if self.scopes:
            body["scopes"] = list(self.scopes)
        return body

    @classmethod
    def from_wire(cls, body: dict, org_id: str | None = None) -> "CreateSpec":
        if not isinstance(body, dict):
            raise ValidationError("Request body must be a JSON object")

        def typed(key, kind, src=body):
            v = src.get(key)
            if v is not None and not isinstance(v, kind):
                raise ValidationError(f"Invalid field '{key}': wrong type")
            return v

        resources = typed("resources", dict) or {}
        network = typed("network", dict) or {}
        timeout = typed("timeout", dict) or {}
        command = typed("command", dict) or {}
        stream = typed("stream", dict) or {}
        exec_ = typed("exec", list, command) or []
        if not all(isinstance(a, str) for a in exec_):
            raise ValidationError("Invalid field 'command.exec': must be a list of strings")
        files = [FileSpec.from_wire(f) for f in (typed("files", list) or [])]
        files += [FileSpec.from_wire(f) for f in (typed("files", list, command) or [])]
        mode = command.get("mode") or ("oneshot" if exec_ else "interactive")
        env = typed("env", dict) or {}
        port = network.get("port")
        if port is not None and not isinstance(port, int):
            raise ValidationError("Invalid field 'network.port': must be an integer")
        for key in ("memory", "cpu", "disk"):
            typed(key, str, resources)
        for key in ("idle", "execution", "paused"):
            typed(key, str, timeout)
        for key in ("dependencies", "packages", "scopes"):
            typed(key, list, body)
        spec = cls(
            mode=mode, command=list(exec_), name=typed("name", str), description=typed("description", str),
            runtime=typed("runtime", str), runtime_id=typed("runtimeId", str), snapshot=typed("snapshot", str),
            memory=resources.get("memory"), cpu=resources.get("cpu"), disk=resources.get("disk"),
            network=bool(network.get("enabled")) or port is not None, port=port,
            idle_timeout=timeout.get("idle"), execution_timeout=timeout.get("execution"),
            paused_timeout=timeout.get("paused"), env=dict(env), files=files,
            dependencies=list(body.get("dependencies") or []), packages=list(body.get("packages") or []),
            metadata=body.get("metadata"), scopes=list(body.get("scopes") or []),
            project_id=typed("projectId", str), org_id=org_id, timestamps=bool(stream.get("timestamps")),
        )
        return spec.validate()


def read_local_file_spec(sandbox_path: str, local_path: str) -> FileSpec:
    """Read a --file's local side now, so a missing file fails before anything is created."""
    abs_path = os.path.abspath(local_path)
    if not os.path.isfile(abs_path):
        raise ValidationError(f"File not found: {local_path} (resolved to {abs_path})")
    with open(abs_path, "rb") as fh:
        return FileSpec(sandbox_path, fh.read())
