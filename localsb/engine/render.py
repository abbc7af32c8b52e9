"""Rows of the state store -> the hosted JSON shapes (reference/hosted-api.md §3)."""
from __future__ import annotations

from localsb.api.models import now_iso, omit_none
from localsb.api.units import format_go_duration, parse_duration

from .store import loads

REGION = "local"


def org_obj(org_id: str, org_names: dict | None = None) -> dict:
    return {"id": org_id, "name": (org_names or {}).get(org_id, org_id)}


def sandbox_info(row, org_names=None, url=None) -> dict:
    spec = loads(row["spec"], {})
    resources = omit_none({"memory": spec.get("memory"), "cpu": spec.get("cpu"), "disk": spec.get("disk")})
    timeout = {}
    for key, field in (("idle", "idle_timeout"), ("execution", "execution_timeout"), ("paused", "paused_timeout")):
        if spec.get(field):
            timeout[key] = format_go_duration(parse_duration(spec[field]))
    d = {
        "sandboxId": row["id"],
        "identifier": row["id"][4:],
        "name": row["name"],
        "description": row["description"],
        "status": row["status"],
        "mode": row["mode"],
        "region": REGION,
        "createdAt": now_iso(row["created_at"]),
        "executions": row["executions"],
        "org": org_obj(row["org_id"], org_names),
        "runtime": {"id": row["runtime_id"], "name": row["runtime_name"]} if row["runtime_id"] else None,
        "snapshot": loads(spec.get("snapshot_info_json")) if spec.get("snapshot_info_json") else None,
        "exitCode": row["exit_code"] if row["status"] in ("terminated", "failed", "deleted") else None,
        "dependencies": spec.get("dependencies") or None,
        "packages": spec.get("packages") or None,
        "metadata": spec.get("metadata"),
        "resources": resources or None,
        "networkEnabled": bool(spec.get("network")),
        "networkPort": spec.get("port"),
        "url": url,
        "timeout": timeout or None,
        "command": {"exec": spec.get("command"), "mode": row["mode"]} if spec.get("command") else None,
        "env": loads(row["env"], {}) or None,
        "cpuTimeMs": row["cpu_time_ms"],
        "memoryByteSec": row["memory_byte_sec"],
        "networkEgressBytes": row["network_egress_bytes"] if row["status"] in ("terminated", "failed", "deleted")
        else None,
        "error": row["error"],
    }
    if row["project_id"]:
        d["project"] = {"id": row["project_id"], "name": row["project_id"]}
    return omit_none(d)


def sandbox_summary(row, org_names=None) -> dict:
    """The GET /cli/sandbox row (the CLI `list` JSON)."""
    return {
        "id": row["id"], "name": row["name"], "description": row["description"],
        "status": row["status"], "region": REGION, "createdAt": now_iso(row["created_at"]),
        "orgId": row["org_id"], "orgName": (org_names or {}).get(row["org_id"], row["org_id"]),
        "projectId": row["project_id"], "mode": row["mode"], "executions": row["executions"],
    }


def execution_info(row) -> dict:
    d = {
        "executionId": row["id"], "sandboxId": row["sandbox_id"], "type": row["type"],
        "status": row["status"], "command": loads(row["command"]),
        "exitCode": row["exit_code"], "durationMs": row["duration_ms"],
        "startedAt": now_iso(row["started_at"]) if row["started_at"] else None,
        "completedAt": now_iso(row["completed_at"]) if row["completed_at"] else None,
        "error": row["error"],
    }
    if row["output_truncated"]:
        d["outputTruncated"] = True
    return omit_none(d)


def job_info(row) -> dict:
    return omit_none({
        "jobId": row["id"], "sandboxId": row["sandbox_id"], "command": loads(row["command"]),
        "status": row["status"], "exitCode": row["exit_code"],
        "startedAt": now_iso(row["started_at"]) if row["started_at"] else None,
        "completedAt": now_iso(row["completed_at"]) if row["completed_at"] else None,
        "error": row["error"],
    })


def event_info(row) -> dict:
    return {"eventId": row["id"], "sandboxId": row["sandbox_id"], "type": row["type"],
            "event": loads(row["payload"], {}), "createdAt": now_iso(row["created_at"])}


def checkpoint_info(row) -> dict:
    return {"id": row["id"], "name": row["name"], "createdAt": now_iso(row["created_at"]),
            "parent": row["parent"]}


def snapshot_info(row, org_names=None, with_files=False) -> dict:
    d = {
        "snapshotId": row["id"], "name": row["name"], "description": row["description"],
        "tag": row["tag"], "sizeBytes": row["size_bytes"], "fileCount": row["file_count"],
        "createdAt": now_iso(row["created_at"]), "parentSnapshotId": row["parent_snapshot_id"],
        "public": bool(row["public"]), "runtimeId": row["runtime_id"],
        "userMetadata": loads(row["metadata"]) or None,
    }
    org_name = (org_names or {}).get(row["org_id"], row["org_id"])
    if row["public"]:
        d["org"] = {"id": row["org_id"], "name": org_name, "slug": org_name}
        d["orgName"] = org_name
        d["orgSlug"] = org_name
        d["fullName"] = f"@{org_name}/{row['name']}:{row['tag'] or 'latest'}"
    if with_files:
        d["files"] = loads(row["files"]) or []
    return omit_none(d)
