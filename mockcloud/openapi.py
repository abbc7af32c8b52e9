"""/openapi.json: the API as mockcloud serves it, built from the route table (mockcloud/routes.py).

Every route is listed with its path and query parameters, its request body and its success
response schema; every route may also answer the error envelope. Schemas follow the official
CLI's zod schemas (node_modules/@agentuity/core/src/services/sandbox/*.ts) and
reference/hosted-api.md §3. Legacy ``/YYYY-MM-DD`` forms of the routes are served too but not
listed (they are the same operations).
"""
from __future__ import annotations

import re

from localsb.api.status import (EXECUTION_STATUSES, JOB_STATUSES, LIST_FILTER_STATUSES, MODES,
                                SANDBOX_STATUSES)

_STATUS_ALT = "|".join(SANDBOX_STATUSES)
_DURATION_PATTERN = r"^(?:0|(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+)$"


def _s(type_, **kw) -> dict:
    return {"type": type_, **kw}


def _obj(props: dict, required=(), **kw) -> dict:
    out = {"type": "object", "properties": props, **kw}
    if required:
        out["required"] = list(required)
    return out


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


def _envelope(data_schema: dict | None, **top) -> dict:
    props = {"success": {"type": "boolean", "enum": [True]}}
    req = ["success"]
    if data_schema is not None:
        props["data"] = data_schema
        req.append("data")
    props.update(top)
    return _obj(props, req)


STR = _s("string")
INT = _s("integer")
NUM = _s("number")
BOOL = _s("boolean")
STR_LIST = _s("array", items=STR)
STR_MAP = _s("object", additionalProperties=STR)
FILE_ENTRY = _obj({"path": _s("string", minLength=1), "content": _s("string", format="byte")}, ["path", "content"])

QUERY_PARAMS = {
    "orgId": {"name": "orgId", "schema": STR},
    "name": {"name": "name", "schema": STR},
    "projectId": {"name": "projectId", "schema": STR},
    "snapshotId": {"name": "snapshotId", "schema": STR},
    "sandboxId": {"name": "sandboxId", "schema": STR},
    "mode": {"name": "mode", "schema": _s("string", enum=list(MODES))},
    "status": {"name": "status", "schema": _s("string", enum=list(LIST_FILTER_STATUSES))},
    "limit": {"name": "limit", "schema": _s("integer", minimum=1, maximum=100)},
    "eventLimit": {"name": "limit", "schema": _s("integer", minimum=1, maximum=100)},
    "lineageLimit": {"name": "limit", "schema": _s("integer", minimum=1, maximum=1000)},
    "offset": {"name": "offset", "schema": _s("integer", minimum=0)},
    "sort": {"name": "sort", "schema": _s("string", enum=["name", "created", "updated", "status", "mode",
                                                           "execution_count"])},
    "runtimeSort": {"name": "sort", "schema": _s("string", enum=["name", "created"])},
    "snapshotSort": {"name": "sort", "schema": _s("string", enum=["name", "created", "size", "files"])},
    "direction": {"name": "direction", "schema": _s("string", enum=["asc", "desc"])},
    "live": {"name": "live", "schema": BOOL},
    "deletedOnly": {"name": "deletedOnly", "schema": BOOL},
    "includeDeleted": {"name": "includeDeleted", "schema": BOOL},
    "force": {"name": "force", "schema": BOOL},
    "mask": {"name": "mask", "schema": BOOL},
    "includeProjectKeys": {"name": "includeProjectKeys", "schema": BOOL},
    "waitForStatus": {"name": "waitForStatus", "description": "comma-separated statuses to wait for",
                      "schema": _s("string", pattern=f"^({_STATUS_ALT})(,({_STATUS_ALT}))*$")},
    "waitMs": {"name": "waitMs", "description": "long-poll bound with waitForStatus (absent: no wait); "
                                                "capped at 60000 on GET /sandbox/{id} and 300000 on "
                                                "/sandbox/status",
               "schema": _s("integer", minimum=0, maximum=300000)},
    "wait": {"name": "wait", "description": "long-poll duration (Go syntax, e.g. 5m); capped at 5m",
             "schema": _s("string", pattern=_DURATION_PATTERN)},
    "snapshot": {"name": "snapshot", "schema": STR},
    "tag": {"name": "tag", "schema": STR},
    "fsPath": {"name": "path", "schema": _s("string", minLength=1)},
    "fsPathRequired": {"name": "path", "required": True, "schema": _s("string", minLength=1)},
    "format": {"name": "format", "schema": _s("string", enum=["tar.gz", "zip"])},
    "uploadFormat": {"name": "format", "schema": _s("string", enum=["", "tar.gz", "zip"])},
    "service": {"name": "service", "schema": _s("string", enum=["sandbox"])},
    "start": {"name": "start", "schema": _s("string", format="date-time")},
    "end": {"name": "end", "schema": _s("string", format="date-time")},
    "v": {"name": "v", "schema": STR},
    "follow": {"name": "follow", "schema": _s("string", enum=["true", "false"])},
}

_RUNTIME_INFO = _obj({"id": STR, "name": STR, "iconUrl": STR, "brandColor": STR, "tags": STR_LIST}, ["id", "name"])
_ORG = _obj({"id": STR, "name": STR}, ["id", "name"])
_SANDBOX_INFO = _obj({
    "sandboxId": STR, "identifier": STR, "name": STR, "description": STR,
    "status": _s("string", enum=list(SANDBOX_STATUSES)), "mode": STR, "createdAt": STR, "region": STR,
    "runtime": _RUNTIME_INFO, "snapshot": _s("object"), "executions": NUM, "exitCode": NUM,
    "stdoutStreamUrl": STR, "stderrStreamUrl": STR, "auditStreamId": STR, "auditStreamUrl": STR,
    "dependencies": STR_LIST, "packages": STR_LIST, "metadata": _s("object"),
    "resources": _obj({"memory": STR, "cpu": STR, "disk": STR}),
    "cpuTimeMs": NUM, "memoryByteSec": NUM, "networkEgressBytes": NUM, "networkEnabled": BOOL,
    "networkPort": NUM, "url": STR, "org": _nullable(_ORG),
    "timeout": _obj({"idle": STR, "execution": STR, "paused": STR}),
    "command": _obj({"exec": STR_LIST, "mode": STR}),
}, ["sandboxId", "status", "createdAt", "executions"])
_EXECUTION = _obj({
    "executionId": STR, "sandboxId": STR, "type": STR, "status": _s("string", enum=list(EXECUTION_STATUSES)),
    "command": STR_LIST, "exitCode": NUM, "durationMs": NUM, "startedAt": STR, "completedAt": STR,
    "error": STR, "stdoutStreamUrl": STR, "stderrStreamUrl": STR, "outputTruncated": BOOL,
}, ["executionId", "status"])
_JOB = _obj({
    "jobId": STR, "sandboxId": STR, "command": STR_LIST, "status": _s("string", enum=list(JOB_STATUSES)),
    "exitCode": _nullable(NUM), "startedAt": _nullable(STR), "completedAt": _nullable(STR),
    "error": _nullable(STR), "stdoutStreamUrl": _nullable(STR), "stderrStreamUrl": _nullable(STR),
}, ["jobId", "sandboxId", "command", "status"])
_CHECKPOINT = _obj({"id": STR, "name": STR, "createdAt": STR, "parent": STR}, ["id", "name", "createdAt", "parent"])
_SNAPSHOT = _obj({
    "snapshotId": STR, "runtimeId": _nullable(STR), "name": STR, "fullName": _nullable(STR),
    "description": _nullable(STR), "message": _nullable(STR), "tag": _nullable(STR), "sizeBytes": NUM,
    "fileCount": NUM, "parentSnapshotId": _nullable(STR), "public": BOOL, "orgName": _nullable(STR),
    "orgSlug": _nullable(STR), "createdAt": STR, "downloadUrl": _nullable(STR),
    "files": _nullable(_s("array", items=_obj({"path": STR, "size": NUM, "sha256": STR, "contentType": STR,
                                                 "mode": INT}))),
    "userMetadata": _nullable(_s("object")),
}, ["snapshotId", "name", "sizeBytes", "fileCount", "createdAt"])
_CLI_SANDBOX = _obj({
    "id": STR, "name": _nullable(STR), "description": _nullable(STR), "status": STR, "region": _nullable(STR),
    "createdAt": _nullable(STR), "orgId": STR, "orgName": _nullable(STR), "projectId": _nullable(STR),
}, ["id", "name", "description", "status", "region", "createdAt", "orgId", "orgName", "projectId"])

SCHEMAS = {
    "Error": _obj({"success": _s("boolean", enum=[False]), "message": STR, "code": STR}, ["success", "message"]),
    "Success": _envelope(None),
    "RegionList": _envelope(_s("array", items=_obj({"region": STR, "description": STR}, ["region", "description"]))),
    "OrgList": _envelope(_s("array", items=_ORG)),
    "AptValidateRequest": _obj({"packages": STR_LIST}, ["packages"]),
    "AptValidateResponse": _envelope(_obj({
        "valid": STR_LIST,
        "invalid": _s("array", items=_obj({"package": STR, "error": STR, "searchUrl": STR},
                                          ["package", "error", "searchUrl"]))}, ["valid", "invalid"])),
    "CliSandboxList": _envelope(_obj({"sandboxes": _s("array", items=_CLI_SANDBOX), "total": NUM},
                                     ["sandboxes", "total"])),
    "CliSandboxResolve": _envelope(_obj({
        "id": STR, "name": _nullable(STR), "region": STR, "status": STR, "orgId": STR,
        "projectId": _nullable(STR)}, ["id", "name", "region", "status", "orgId", "projectId"])),
    "SandboxCreate": _obj({
        "projectId": STR, "runtime": STR, "runtimeId": STR, "name": STR, "description": STR,
        "resources": _obj({"memory": STR, "cpu": STR, "disk": STR}), "env": STR_MAP,
        "network": _obj({"enabled": BOOL, "port": _s("integer", minimum=1024, maximum=65535)}),
        "stream": _obj({"stdout": STR, "stderr": STR, "stdin": STR, "timestamps": BOOL}),
        "timeout": _obj({"idle": STR, "execution": STR, "paused": STR}),
        "command": _obj({"exec": STR_LIST, "files": _s("array", items=FILE_ENTRY),
                         "mode": _s("string", enum=list(MODES))}, ["exec"]),
        "files": _s("array", items=FILE_ENTRY), "snapshot": STR, "dependencies": STR_LIST,
        "packages": STR_LIST, "metadata": _s("object"), "scopes": STR_LIST,
    }),
    "SandboxCreateResponse": _envelope(_obj({
        "sandboxId": STR, "status": _s("string", enum=list(SANDBOX_STATUSES)), "executionId": STR, "url": STR,
        "stdoutStreamUrl": STR, "stderrStreamUrl": STR, "auditStreamUrl": STR}, ["sandboxId", "status"])),
    "SandboxData": _envelope(_SANDBOX_INFO),
    "SandboxList": _envelope(_obj({"sandboxes": _s("array", items=_SANDBOX_INFO), "total": NUM},
                                  ["sandboxes", "total"])),
    "SandboxStatus": _envelope(_obj({"sandboxId": STR, "status": STR, "exitCode": NUM}, ["sandboxId", "status"])),
    "PauseResponse": _obj({"success": _s("boolean", enum=[True]), "sandboxId": STR, "status": STR,
                           "checkpointId": STR, "terminatesAt": STR}, ["success", "sandboxId", "status"]),
    "EnvUpdate": _obj({"env": _s("object", additionalProperties=_nullable(STR))}, ["env"]),
    "EnvData": _envelope(_obj({"env": STR_MAP}, ["env"])),
    "ExecuteRequest": _obj({
        "command": _s("array", items=STR, minItems=1), "files": _s("array", items=FILE_ENTRY),
        "timeout": _s("string", pattern=_DURATION_PATTERN),
        "stream": _obj({"stdout": STR, "stderr": STR, "timestamps": BOOL})}, ["command"]),
    "ExecuteResponse": _envelope(_EXECUTION, autoResumed=BOOL),
    "ExecutionData": _envelope(_EXECUTION),
    "ExecutionList": _envelope(_obj({"executions": _s("array", items=_EXECUTION)}, ["executions"])),
    "EventList": _envelope(_obj({"events": _s("array", items=_obj({
        "eventId": STR, "sandboxId": STR, "type": STR, "event": _s("object"), "createdAt": STR},
        ["eventId", "sandboxId", "type", "event", "createdAt"]))}, ["events"])),
    "JobCreate": _obj({"command": _s("array", items=STR, minItems=1)}, ["command"]),
    "JobData": _envelope(_JOB),
    "JobList": _envelope(_obj({"jobs": _s("array", items=_JOB)}, ["jobs"])),
    "RuntimeList": _envelope(_obj({"runtimes": _s("array", items=_obj({
        "id": STR, "name": STR, "description": STR, "iconUrl": STR, "brandColor": STR, "url": STR,
        "tags": STR_LIST, "requirements": _obj({"memory": STR, "cpu": STR, "disk": STR, "networkEnabled": BOOL}),
        "readme": STR}, ["id", "name"])), "total": NUM}, ["runtimes", "total"])),
    "CheckpointCreate": _obj({"name": _s("string", minLength=1)}, ["name"]),
    "CheckpointData": _envelope(_CHECKPOINT),
    "CheckpointList": _envelope(_obj({"checkpoints": _s("array", items=_CHECKPOINT)}, ["checkpoints"])),
    "SnapshotCreate": _obj({"name": _s("string", pattern=r"^[a-zA-Z0-9_-]+$"), "description": STR,
                            "tag": _s("string", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._-]*$", maxLength=128),
                            "public": BOOL}),
    "SnapshotData": _envelope(_SNAPSHOT),
    "SnapshotList": _envelope(_obj({"snapshots": _s("array", items=_SNAPSHOT), "total": NUM},
                                   ["snapshots", "total"])),
    "SnapshotLineage": _envelope(_obj({"lineage": _s("array", items=_s("object")), "total": NUM},
                                      ["lineage", "total"])),
    "SnapshotTagUpdate": _obj({"tag": _nullable(_s("string", pattern=r"^[a-zA-Z0-9_][a-zA-Z0-9._-]*$",
                                                    maxLength=128))}, ["tag"]),
    "SnapshotBuildInit": _obj({
        "runtime": STR, "name": _s("string", pattern=r"^[a-zA-Z0-9_-]+$"), "tag": STR, "description": STR,
        "message": STR, "git": _s("object"), "contentHash": STR, "force": BOOL, "encrypt": BOOL, "public": BOOL},
        ["runtime"]),
    "SnapshotBuildInitResponse": _envelope(_obj({
        "snapshotId": STR, "uploadUrl": STR, "unchanged": BOOL, "existingId": STR, "existingName": STR,
        "existingTag": _nullable(STR)})),
    "SnapshotUploadResponse": _envelope(_obj({"success": BOOL, "scanned": BOOL, "message": STR},
                                             ["success", "scanned"])),
    "SnapshotBuildFinalize": _obj({
        "sizeBytes": INT, "fileCount": INT,
        "files": _s("array", items=_obj({"path": STR, "size": INT, "sha256": STR, "contentType": STR,
                                          "mode": INT})),
        "dependencies": STR_LIST, "packages": STR_LIST, "env": STR_MAP, "metadata": _s("object")},
        ["sizeBytes", "fileCount"]),
    "WriteFiles": _obj({"files": _s("array", items=FILE_ENTRY)}, ["files"]),
    "WriteFilesResponse": _envelope(_obj({"filesWritten": INT}, ["filesWritten"])),
    "FileList": _envelope(_obj({"files": _s("array", items=_obj({
        "path": STR, "size": NUM, "isDir": BOOL, "mode": STR, "modTime": STR, "isSymlink": BOOL,
        "linkTarget": STR}, ["path", "size", "isDir", "mode", "modTime"]))}, ["files"])),
    "MkdirRequest": _obj({"path": _s("string", minLength=1), "recursive": BOOL}, ["path"]),
    "RmRequest": _obj({"path": _s("string", minLength=1)}, ["path"]),
    "RmdirRequest": _obj({"path": _s("string", minLength=1), "recursive": BOOL}, ["path"]),
    "FoundResponse": _obj({"success": _s("boolean", enum=[True]), "found": BOOL}, ["success"]),
    "StatsData": _envelope(_obj({"services": _obj({"sandbox": _obj({
        k: NUM for k in ("totalActive", "running", "idle", "creating", "totalExecutions", "totalCpuTimeMs",
                         "totalMemoryByteSec", "totalNetworkEgressBytes")})})}, ["services"])),
    "StreamCreate": _obj({"name": STR}),
    "StreamCreated": _obj({"id": STR}, ["id"]),
}

_PARAM_RE = re.compile(r"{(\w+)(?::[^}]*)?}")
_ERROR_STATUSES = {"400": "Bad request", "401": "Missing or invalid API key", "403": "Another organization",
                   "404": "Not found", "409": "Conflict (busy, wrong state, already exists)",
                   "410": "The sandbox has terminated", "413": "Payload too large",
                   "422": "Understood, but this host cannot provide the feature",
                   "501": "Not supported by this server"}


def _operation(route) -> dict:
    params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
              for p in _PARAM_RE.findall(route.path)]
    for key in route.query:
        q = QUERY_PARAMS[key]
        params.append({"in": "query", "required": q.get("required", False), **{k: v for k, v in q.items()
                                                                                if k != "required"}})
    op = {"operationId": route.handler.__name__ + ("_" + route.method.lower()
                                                    if route.handler.__name__ == "stdin_put" else ""),
          "summary": route.summary, "parameters": params}
    if route.body == "binary":
        op["requestBody"] = {"required": False, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}}
    elif route.body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(route.body)}}}
    if route.response == "binary":
        ok_content = {route.raw_type or "application/octet-stream": {"schema": {"type": "string",
                                                                                "format": "binary"}}}
    else:
        ok_content = {"application/json": {"schema": _ref(route.response)}}
    responses = {str(route.status): {"description": "Success", "content": ok_content}}
    for code, text in _ERROR_STATUSES.items():
        if code == "401" and route.public:
            continue
        responses[code] = {"description": text, "content": {"application/json": {"schema": _ref("Error")}}}
    op["responses"] = responses
    if not route.public:
        op["security"] = [{"bearer": []}]
    else:
        op["security"] = []
    return op


def build_spec(routes, server_url: str | None = None) -> dict:
    paths: dict = {}
    for route in routes:
        path = _PARAM_RE.sub(lambda m: "{" + m.group(1) + "}", route.path)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route)
    paths["/openapi.json"] = {"get": {"operationId": "openapi", "summary": "This document", "security": [],
                                      "responses": {"200": {"description": "OpenAPI 3.0 document",
                                                            "content": {"application/json": {
                                                                "schema": {"type": "object"}}}}}}}
    spec = {
        "openapi": "3.0.3",
        "info": {"title": "mockcloud: the Agentuity sandbox API", "version": "2.0.21",
                 "description": "The hosted sandbox API as mockcloud serves it. Errors answer "
                                "{success:false, message, code}. Routes of /sandbox, /fs, /sandbox/env and "
                                "/services/stats also accept a legacy /YYYY-MM-DD segment."},
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
    if server_url:
        spec["servers"] = [{"url": server_url}]
    return spec
