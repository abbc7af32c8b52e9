"""The route table: every path mockcloud serves, once, with what /openapi.json says about it.

Paths are those of official-cli-wire.md §3 and hosted-api.md §2. Each route of the sandbox,
fs and stats families is also served under the legacy ``/YYYY-MM-DD`` version segment
(hosted-api.md §1.5: ``/sandbox/2025-03-17/{id}``, ``/fs/2025-03-17/list/{id}``,
``/sandbox/env/2025-03-17/{id}``, ``/services/stats/2026-02-26/{orgId}``).

Order matters where a literal and a parameter compete at the same depth (``/sandbox/runtimes``
against ``/sandbox/{sandboxId}``): literals are listed first.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from . import streams
from .auth import mark_public
from .handlers import checkpoints, cli, events, executions, fs, jobs, sandboxes, snapshots

VERSION_SEGMENT = r"{apiVersion:\d{4}-\d{2}-\d{2}}"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: object
    summary: str
    query: tuple = ()            # names in openapi.QUERY_PARAMS
    body: str | None = None      # a schema name in openapi.SCHEMAS, or "binary"
    response: str = "Success"    # a schema name, or "binary"
    status: int = 200
    public: bool = False
    versioned: bool = False
    raw_type: str | None = None  # content type of a raw (non-JSON) success body
    tags: tuple = field(default=())


def _r(method, path, handler, summary, **kw) -> Route:
    return Route(method, path, handler, summary, **kw)


S = "sandbox"
ROUTES: list[Route] = [
    # the API host's /cli calls ----------------------------------------------------------------
    _r("GET", "/cli/region", cli.cli_region, "List regions", response="RegionList"),
    _r("GET", "/cli/organization", cli.cli_organization, "List the key's organizations", response="OrgList"),
    _r("GET", "/cli/project/{projectId}", cli.cli_project, "Get a project (mockcloud has none: 404)",
       query=("mask", "includeProjectKeys")),
    _r("POST", "/cli/validate/apt-dependencies", cli.cli_validate_apt, "Validate apt package names",
       body="AptValidateRequest", response="AptValidateResponse", public=True),
    _r("GET", "/cli/sandbox", sandboxes.cli_sandbox_list, "List sandboxes (CLI)",
       query=("name", "mode", "projectId", "orgId", "status", "limit", "offset", "sort", "direction"),
       response="CliSandboxList"),
    _r("GET", "/cli/sandbox/{sandboxId}", sandboxes.cli_sandbox_resolve, "Resolve a sandbox's region and org",
       response="CliSandboxResolve"),

    # sandbox: literal second segments first ------------------------------------------------------
    _r("GET", "/sandbox/runtimes", events.runtime_list, "List runtimes",
       query=("orgId", "limit", "offset", "runtimeSort", "direction"), response="RuntimeList", versioned=True),
    _r("GET", "/sandbox/snapshots/lineage", snapshots.snapshot_lineage, "Snapshot lineage",
       query=("orgId", "snapshot", "name", "tag", "lineageLimit"), response="SnapshotLineage", versioned=True),
    _r("GET", "/sandbox/snapshots/public", snapshots.snapshot_public_list, "List public snapshots",
       query=("limit", "offset"), response="SnapshotList", public=True, versioned=True),
    _r("GET", "/sandbox/snapshots/public/{snapshotRef}", snapshots.snapshot_public_get, "Get a public snapshot",
       response="SnapshotData", public=True, versioned=True),
    _r("POST", "/sandbox/snapshots/build", snapshots.snapshot_build_init, "Start a snapshot build",
       query=("orgId",), body="SnapshotBuildInit", response="SnapshotBuildInitResponse", versioned=True),
    _r("GET", "/sandbox/snapshots", snapshots.snapshot_list, "List snapshots",
       query=("orgId", "sandboxId", "limit", "offset", "snapshotSort", "direction"), response="SnapshotList",
       versioned=True),
    _r("GET", "/sandbox/snapshots/{snapshotId}", snapshots.snapshot_get, "Get a snapshot",
       query=("orgId",), response="SnapshotData", versioned=True),
    _r("PATCH", "/sandbox/snapshots/{snapshotId}", snapshots.snapshot_tag, "Set or clear a snapshot's tag",
       query=("orgId",), body="SnapshotTagUpdate", response="SnapshotData", versioned=True),
    _r("DELETE", "/sandbox/snapshots/{snapshotId}", snapshots.snapshot_delete, "Delete a snapshot",
       query=("orgId",), versioned=True),
    _r("PUT", "/sandbox/snapshots/{snapshotId}/upload", snapshots.snapshot_upload,
       "Upload a public snapshot's archive", query=("orgId",), body="binary", response="SnapshotUploadResponse",
       versioned=True),
    _r("POST", "/sandbox/snapshots/{snapshotId}/finalize", snapshots.snapshot_build_finalize,
       "Finish a snapshot build", query=("orgId",), body="SnapshotBuildFinalize", response="SnapshotData",
       versioned=True),
    _r("GET", "/sandbox/checkpoints/{sandboxId}", checkpoints.checkpoint_list, "List checkpoints",
       query=("orgId",), response="CheckpointList", versioned=True),
    _r("GET", "/sandbox/status/{sandboxId}", sandboxes.sandbox_status, "Lightweight sandbox status",
       query=("orgId", "waitForStatus", "waitMs"), response="SandboxStatus", versioned=True),
    _r("GET", "/sandbox/execution/{executionId}", executions.execution_get, "Get an execution (long-poll)",
       query=("orgId", "wait"), response="ExecutionData", versioned=True),
    _r("GET", "/sandbox/sandboxes/{sandboxId}/executions", executions.execution_list, "List executions",
       query=("orgId", "limit"), response="ExecutionList", versioned=True),
    _r("GET", "/sandbox/sandboxes/{sandboxId}/events", events.events_list, "List events",
       query=("orgId", "eventLimit", "direction"), response="EventList", versioned=True),
    _r("POST", "/sandbox/sandboxes/{sandboxId}/jobs", jobs.job_create, "Start a background job",
       query=("orgId",), body="JobCreate", response="JobData", versioned=True),
    _r("GET", "/sandbox/sandboxes/{sandboxId}/jobs", jobs.job_list, "List jobs",
       query=("orgId", "limit"), response="JobList", versioned=True),
    _r("GET", "/sandbox/sandboxes/{sandboxId}/jobs/{jobId}", jobs.job_get, "Get a job",
       query=("orgId",), response="JobData", versioned=True),
    _r("DELETE", "/sandbox/sandboxes/{sandboxId}/jobs/{jobId}", jobs.job_destroy, "Stop a job",
       query=("orgId", "force"), response="JobData", versioned=True),
    _r("PATCH", "/sandbox/env/{sandboxId}", sandboxes.sandbox_env, "Set or delete environment variables",
       query=("orgId",), body="EnvUpdate", response="EnvData", versioned=True),

    # sandbox: the collection and one sandbox ----------------------------------------------------
    _r("POST", "/sandbox", sandboxes.sandbox_create, "Create a sandbox", query=("orgId",),
       body="SandboxCreate", response="SandboxCreateResponse", status=201, versioned=True),
    _r("GET", "/sandbox", sandboxes.sandbox_list, "List sandboxes (SDK)",
       query=("orgId", "name", "mode", "projectId", "snapshotId", "status", "live", "limit", "offset", "sort",
              "direction", "deletedOnly"), response="SandboxList", versioned=True),
    _r("GET", "/sandbox/{sandboxId}", sandboxes.sandbox_get, "Get a sandbox",
       query=("orgId", "includeDeleted", "waitForStatus", "waitMs"), response="SandboxData", versioned=True),
    _r("DELETE", "/sandbox/{sandboxId}", sandboxes.sandbox_destroy, "Destroy a sandbox", query=("orgId",),
       versioned=True),
    _r("POST", "/sandbox/{sandboxId}/pause", sandboxes.sandbox_pause, "Pause a sandbox", query=("orgId",),
       response="PauseResponse", versioned=True),
    _r("POST", "/sandbox/{sandboxId}/resume", sandboxes.sandbox_resume, "Resume a sandbox", query=("orgId",),
       versioned=True),
    _r("POST", "/sandbox/{sandboxId}/execute", executions.sandbox_execute, "Execute a command",
       query=("orgId",), body="ExecuteRequest", response="ExecuteResponse", versioned=True),
    _r("POST", "/sandbox/{sandboxId}/checkpoint", checkpoints.checkpoint_create, "Create a checkpoint",
       query=("orgId",), body="CheckpointCreate", response="CheckpointData", status=201, versioned=True),
    _r("POST", "/sandbox/{sandboxId}/checkpoint/{checkpointId}/restore", checkpoints.checkpoint_restore,
       "Restore a checkpoint (id or name)", query=("orgId",), versioned=True),
    _r("DELETE", "/sandbox/{sandboxId}/checkpoint/{checkpointId}", checkpoints.checkpoint_delete,
       "Delete a checkpoint (id or name)", query=("orgId",), versioned=True),
    _r("POST", "/sandbox/{sandboxId}/snapshot", snapshots.snapshot_create, "Snapshot a sandbox",
       query=("orgId",), body="SnapshotCreate", response="SnapshotData", status=201, versioned=True),

    # file system ---------------------------------------------------------------------------------
    _r("GET", "/fs/list/{sandboxId}", fs.fs_list, "List a directory", query=("orgId", "fsPath"),
       response="FileList", versioned=True),
    _r("POST", "/fs/mkdir/{sandboxId}", fs.fs_mkdir, "Make a directory", query=("orgId",), body="MkdirRequest",
       versioned=True),
    _r("POST", "/fs/rm/{sandboxId}", fs.fs_rm, "Remove a file", query=("orgId",), body="RmRequest",
       response="FoundResponse", versioned=True),
    _r("POST", "/fs/rmdir/{sandboxId}", fs.fs_rmdir, "Remove a directory", query=("orgId",),
       body="RmdirRequest", response="FoundResponse", versioned=True),
    _r("GET", "/fs/download/{sandboxId}", fs.fs_download, "Download a directory as an archive",
       query=("orgId", "fsPath", "format"), response="binary", raw_type="application/gzip", versioned=True),
    _r("POST", "/fs/upload/{sandboxId}", fs.fs_upload, "Upload and extract an archive",
       query=("orgId", "fsPath", "uploadFormat"), body="binary", versioned=True),
    _r("POST", "/fs/{sandboxId}", fs.fs_write, "Write files (base64)", query=("orgId",), body="WriteFiles",
       response="WriteFilesResponse", versioned=True),
    _r("GET", "/fs/{sandboxId}", fs.fs_read, "Read a file (raw bytes)", query=("orgId", "fsPathRequired"),
       response="binary", raw_type="application/octet-stream", versioned=True),

    # stats ---------------------------------------------------------------------------------------
    _r("GET", "/services/stats/{orgId}", events.stats, "Sandbox statistics of an organization",
       query=("service", "start", "end"), response="StatsData", versioned=True),

    # capability URLs and the stream service ------------------------------------------------------
    _r("GET", "/streams/{kind}/{id}/{token}/{stream}", streams.stream_get, "Read an output stream",
       query=("v", "follow"), response="binary", raw_type="application/octet-stream", public=True),
    _r("PUT", "/uploads/snapshots/{snapshotId}/{token}", snapshots.snapshot_presigned_put,
       "Presigned snapshot archive upload", body="binary", public=True),
    _r("POST", "/", streams.stdin_create, "Create a stdin stream (stream service)", query=("orgId",),
       body="StreamCreate", response="StreamCreated", status=201),
    _r("PUT", "/{stream_id:strm_[a-z0-9]+}", streams.stdin_put, "Upload a stdin stream's bytes (stream service)",
       query=("orgId",), body="binary"),
]


def versioned_path(path: str) -> str | None:
    """The legacy form of ``path``: the version segment goes after /sandbox/env, /services/stats,
    /sandbox or /fs."""
    for prefix in ("/sandbox/env", "/services/stats", "/sandbox", "/fs"):
        if path == prefix or path.startswith(prefix + "/"):
            return prefix + "/" + VERSION_SEGMENT + path[len(prefix):]
    return None


def add_routes(app: web.Application, openapi_handler) -> None:
    for route in ROUTES:
        if route.public:
            mark_public(route.handler)
    app.router.add_get("/openapi.json", mark_public(openapi_handler))
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    for route in ROUTES:
        if route.versioned:
            app.router.add_route(route.method, versioned_path(route.path), route.handler)
