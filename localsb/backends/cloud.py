"""The cloud backend: an HTTP client of the hosted sandbox API (mockcloud, or the real service).

Configured like the official CLI (reference/official-cli-wire.md §1): AGENTUITY_API_URL (the
/cli/* calls), AGENTUITY_CATALYST_URL or AGENTUITY_TRANSPORT_URL (/sandbox, /fs, /services),
AGENTUITY_STREAM_URL (stdin streams of `run`), AGENTUITY_API_KEY or AGENTUITY_CLI_API_KEY,
AGENTUITY_CLOUD_ORG_ID, AGENTUITY_REGION. Error envelopes become the localsb.api.errors class of
their code with the server's message unchanged, so the CLI prints what it prints locally.

Only the standard library: `localsb` must not import aiohttp, and this module is imported only
when the cloud backend is chosen. Connections are kept alive per thread.
"""
from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from urllib.parse import quote, urlencode, urlsplit

from localsb.api import errors as E
from localsb.api.backend import Backend
from localsb.api.specs import CreateSpec
from localsb.api.status import EXECUTION_TERMINAL, execution_exit_code

USER_AGENT = "localsb-cloud-backend"
# Long-polls ask the server for at most 5 minutes; the socket waits a little longer than that.
SOCKET_TIMEOUT = 330.0
EXECUTION_WAIT = "5m"
RUN_STATUS_WAIT_MS = 300_000
TERMINAL_SANDBOX = ("terminated", "failed", "deleted")
# 502/503 mean "restarting": retried briefly (the official CLI retries for 30 s, wire doc §2.3).
RETRY_STATUSES = (502, 503)
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def _default_urls(region: str) -> tuple[str, str, str]:
    if region == "local":
        return "https://api.agentuity.io", "https://catalyst.agentuity.io", "https://streams.agentuity.io"
    return ("https://api.agentuity.com", f"https://catalyst-{region}.agentuity.cloud",
            f"https://streams-{region}.agentuity.cloud")


class _Connections(threading.local):
    def __init__(self):
        self.by_origin: dict[tuple, http.client.HTTPConnection] = {}


class CloudBackend(Backend):
    name = "cloud"

    def __init__(self, *, api_url: str, catalyst_url: str, stream_url: str, api_key: str,
                 org_id: str | None = None, region: str = "usc", timeout: float = SOCKET_TIMEOUT):
        if not api_key:
            raise E.Unauthorized("Authentication required: set AGENTUITY_API_KEY (mockcloud keys create --org NAME "
                                 "makes one)")
        self.api_url = api_url.rstrip("/")
        self.catalyst_url = catalyst_url.rstrip("/")
        self.stream_url = stream_url.rstrip("/")
        self.api_key = api_key
        self.default_org = org_id
        self.region = region
        self.timeout = timeout
        self._conns = _Connections()
        self._org_lock = threading.Lock()

    @classmethod
    def from_env(cls, env=None, org_id: str | None = None) -> "CloudBackend":
        import os
        env = os.environ if env is None else env
        region = env.get("AGENTUITY_REGION") or "usc"
        api, catalyst, stream = _default_urls(region)
        return cls(api_url=env.get("AGENTUITY_API_URL") or api,
                   catalyst_url=env.get("AGENTUITY_CATALYST_URL") or env.get("AGENTUITY_TRANSPORT_URL") or catalyst,
                   stream_url=env.get("AGENTUITY_STREAM_URL") or stream,
                   api_key=env.get("AGENTUITY_API_KEY") or env.get("AGENTUITY_CLI_API_KEY") or "",
                   org_id=org_id or env.get("AGENTUITY_CLOUD_ORG_ID") or None, region=region)

    # transport -----------------------------------------------------------------------------------
    def _conn(self, scheme: str, host: str, port: int, fresh: bool = False) -> http.client.HTTPConnection:
        key = (scheme, host, port)
        conn = self._conns.by_origin.get(key)
        if conn is not None and not fresh:
            return conn
        if conn is not None:
            conn.close()
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = cls(host, port, timeout=self.timeout)
        self._conns.by_origin[key] = conn
        return conn

    def _send(self, method: str, url: str, body=None, headers: dict | None = None, *, stream: bool = False):
        """One HTTP exchange; returns the response (body unread when ``stream``). A keep-alive
        connection the server has closed meanwhile is reopened once; 502/503 are retried briefly."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise E.ValidationError(f"Invalid API URL: {url}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
        rewindable = body is None or isinstance(body, (bytes, bytearray))
        for attempt in range(len(RETRY_DELAYS) + 1):
            for reconnect in (False, True):
                conn = self._conn(parts.scheme, parts.hostname, port, fresh=reconnect or _stale(self._conn(
                    parts.scheme, parts.hostname, port)))
                reused = conn.sock is not None
                sent = False
                try:
                    conn.request(method, target, body=body, headers=hdrs,
                                 encode_chunked=not rewindable)
                    sent = True
                    resp = conn.getresponse()
                    break
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                        http.client.CannotSendRequest, http.client.ResponseNotReady) as e:
                    conn.close()
                    # Resend only what cannot have been acted on twice: a request that never left,
                    # or an idempotent one. A POST whose answer was lost may have been executed.
                    safe = not sent or method in IDEMPOTENT
                    if reused and not reconnect and rewindable and safe:
                        continue
                    raise E.NetworkError(f"Connection to {parts.scheme}://{parts.netloc} failed: {e}") from None
                except ConnectionRefusedError:
                    conn.close()
                    raise E.NetworkError(f"Cannot reach the sandbox API at {parts.scheme}://{parts.netloc}: "
                                         "connection refused (is the server running? check "
                                         "AGENTUITY_CATALYST_URL / AGENTUITY_API_URL)") from None
                except socket.timeout:
                    conn.close()
                    raise E.NetworkError(f"Timed out waiting for {parts.scheme}://{parts.netloc}") from None
                except OSError as e:
                    conn.close()
                    raise E.NetworkError(f"Cannot reach {parts.scheme}://{parts.netloc}: {e.strerror or e}") from None
            if resp.status in RETRY_STATUSES and rewindable and attempt < len(RETRY_DELAYS):
                resp.read()
                time.sleep(RETRY_DELAYS[attempt])
                continue
            if not stream:
                resp.data = resp.read()
            return resp
        raise AssertionError("unreachable")

    def _headers(self, content_type: str | None = "application/json") -> dict:
        h = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        if content_type:
            h["Content-Type"] = content_type
        return h

    @staticmethod
    def _error(status: int, data: bytes, content_type: str, url: str) -> E.LocalsbError:
        obj = None
        if "json" in (content_type or ""):
            try:
                obj = json.loads(data)
            except ValueError:
                obj = None
        if isinstance(obj, dict):
            message = obj.get("error") if isinstance(obj.get("error"), str) else obj.get("message")
            if message:
                return E.from_code(obj.get("code"), message, status)
        text = data.decode("utf-8", "replace").strip()[:300]
        if status == 401:
            return E.Unauthorized(f"Unauthorized (HTTP 401) from {url}: check AGENTUITY_API_KEY")
        return E.from_code(None, f"HTTP {status} from {url}" + (f": {text}" if text else ""), status)

    def _json(self, method: str, base: str, path: str, *, query: dict | None = None, body=None,
              raw: bytes | None = None, content_type: str | None = "application/json",
              extra_headers: dict | None = None) -> dict:
        """A JSON call; returns the whole envelope. Errors (non-2xx, or 2xx with success:false)
        raise the localsb.api.errors class of the answer's code."""
        url = base + path
        q = {k: v for k, v in (query or {}).items() if v is not None}
        if q:
            url += "?" + urlencode({k: (str(v).lower() if isinstance(v, bool) else v) for k, v in q.items()})
        if raw is not None:
            payload = raw
        elif body is not None:
            payload = json.dumps(body).encode()
        else:
            # Bodiless POST/DELETE/PUT carry Content-Length: 0, as the official CLI's do.
            payload = None if method == "GET" else b""
        headers = self._headers(content_type)
        if extra_headers:
            headers.update(extra_headers)
        resp = self._send(method, url, payload, headers)
        ctype = resp.getheader("Content-Type", "")
        if not 200 <= resp.status < 300:
            raise self._error(resp.status, resp.data, ctype, url)
        try:
            obj = json.loads(resp.data) if resp.data else {}
        except ValueError:
            raise E.APIError(f"Invalid JSON answer from {url} (HTTP {resp.status})", status=resp.status) from None
        if isinstance(obj, dict) and obj.get("success") is False:
            raise E.from_code(obj.get("code"), obj.get("message") or "request failed", resp.status)
        return obj if isinstance(obj, dict) else {"data": obj}

    def _raw_get(self, url: str, out, *, auth: bool = True) -> int:
        """GET ``url`` and copy the raw body into ``out`` as it arrives; returns the byte count."""
        headers = self._headers(None) if auth else {}
        resp = self._send("GET", url, None, headers, stream=True)
        if not 200 <= resp.status < 300:
            raise self._error(resp.status, resp.read(), resp.getheader("Content-Type", ""), url)
        n = 0
        while True:
            try:
                chunk = resp.read1(65536)
            except (http.client.HTTPException, OSError) as e:
                resp.close()
                raise E.NetworkError(f"The stream {url.split('?')[0]} broke off after {n} bytes: "
                                     f"{type(e).__name__}") from None
            if not chunk:
                resp.close()  # releases the keep-alive connection for the next request
                break
            n += len(chunk)
            if out is not None:
                out.write(chunk)
                _flush(out)
        return n

    def _org(self, org_id: str | None) -> str:
        """The org of a call: the argument, else AGENTUITY_CLOUD_ORG_ID, else the key's only org."""
        if org_id:
            return org_id
        if self.default_org:
            return self.default_org
        with self._org_lock:
            if not self.default_org:
                orgs = self._json("GET", self.api_url, "/cli/organization").get("data") or []
                if len(orgs) != 1:
                    raise E.ValidationError("This API key belongs to several organizations: set "
                                            "AGENTUITY_CLOUD_ORG_ID or pass --org-id")
                self.default_org = orgs[0]["id"]
        return self.default_org

    def _c(self, method: str, path: str, org_id=None, *, query: dict | None = None, **kw) -> dict:
        """A Catalyst call with ``?orgId=``."""
        q = {"orgId": self._org(org_id)}
        q.update(query or {})
        return self._json(method, self.catalyst_url, path, query=q, **kw)

    def _stream_threads(self, urls_outs) -> list[threading.Thread]:
        """Read each stream URL into its file object on a thread of its own (stdout and stderr
        must be drained concurrently, or a command that fills one pipe stalls the other)."""
        threads = []
        errors: list = []

        def pump(url, out):
            try:
                self._raw_get(url + ("&" if "?" in url else "?") + "v=2", out, auth=False)
            except E.LocalsbError as e:
                errors.append(e)

        for url, out in urls_outs:
            if url:
                t = threading.Thread(target=pump, args=(url, out), daemon=True)
                t.start()
                threads.append(t)
        return threads

    # sandboxes -----------------------------------------------------------------------------------
    def sandbox_create(self, spec: CreateSpec) -> dict:
        spec.validate()
        return self._c("POST", "/sandbox", spec.org_id, body=spec.to_wire())["data"]

    def _stdin_stream(self, data: bytes, org: str) -> str:
        """Create a stdin stream and upload all of it before the sandbox starts (the hosted stream
        service, wire doc §3 rows 46-47), so the command reads it from the first byte."""
        made = self._json("POST", self.stream_url, "/", query={"orgId": org},
                          body={"name": f"sandbox-stdin-{int(time.time() * 1000)}"})
        sid = made.get("id")
        if not sid:
            raise E.APIError("The stream service answered without a stream id")
        self._json("PUT", self.stream_url, "/" + quote(sid), query={"orgId": org}, raw=data, content_type=None)
        return sid

    def sandbox_run(self, spec: CreateSpec, stdin=None, stdout=None, stderr=None) -> dict:
        started = time.monotonic()
        spec.mode = "oneshot"
        spec.validate()
        org = self._org(spec.org_id)
        body = spec.to_wire()
        stream = body.setdefault("stream", {})
        data = stdin.read() if stdin is not None else b""
        stream["stdin"] = self._stdin_stream(data, org) if data else "ignore"
        if stdout is None:
            stream["stdout"] = "ignore"
        if stderr is None:
            stream["stderr"] = "ignore"
        created = self._c("POST", "/sandbox", org, body=body)["data"]
        sandbox_id = created["sandboxId"]
        try:
            threads = self._stream_threads([(created.get("stdoutStreamUrl"), stdout),
                                            (created.get("stderrStreamUrl"), stderr)])
            for t in threads:
                t.join()
            status = self._wait_terminal(sandbox_id, org)
            exit_code = status.get("exitCode")
            if exit_code is None and created.get("executionId"):
                ex = self.execution_get(created["executionId"], wait="250ms", org_id=org)
                exit_code = execution_exit_code(ex.get("status"), ex.get("exitCode"))
            if exit_code is None:
                exit_code = 1 if status.get("status") == "failed" else 0
        except BaseException:
            try:
                self.sandbox_destroy(sandbox_id, org_id=org)
            except E.LocalsbError:
                pass
            raise
        return {"sandboxId": sandbox_id, "exitCode": exit_code,
                "durationMs": int((time.monotonic() - started) * 1000)}

    def _wait_terminal(self, sandbox_id: str, org: str) -> dict:
        while True:
            st = self._c("GET", f"/sandbox/status/{quote(sandbox_id)}", org,
                         query={"waitForStatus": "terminated,failed", "waitMs": RUN_STATUS_WAIT_MS})["data"]
            if st.get("status") in TERMINAL_SANDBOX:
                return st

    def sandbox_execute(self, sandbox_id: str, command: list[str], *, timeout: str | None = None,
                        timestamps: bool = False, stdout=None, stderr=None, org_id=None) -> dict:
        org = self._org(org_id)
        stream = {"timestamps": bool(timestamps)}
        if stdout is None:
            stream["stdout"] = "ignore"
        if stderr is None:
            stream["stderr"] = "ignore"
        body = {"command": list(command), "stream": stream}
        if timeout:
            body["timeout"] = timeout
        env = self._c("POST", f"/sandbox/{quote(sandbox_id)}/execute", org, body=body)
        info = env["data"]
        threads = self._stream_threads([(info.get("stdoutStreamUrl"), stdout),
                                        (info.get("stderrStreamUrl"), stderr)])
        result = info
        while result.get("status") not in EXECUTION_TERMINAL:
            result = self.execution_get(info["executionId"], wait=EXECUTION_WAIT, org_id=org)
        for t in threads:
            t.join()
        if env.get("autoResumed"):
            result = dict(result, autoResumed=True)
        return result

    def sandbox_list(self, *, org_id=None, project_id=None, name=None, mode=None, status=None,
                     snapshot_id=None, limit=50, offset=0, sort="created", direction="desc",
                     include_deleted=False, deleted_only=False, live=False) -> dict:
        query = {"name": name, "mode": mode, "projectId": project_id, "orgId": org_id or self.default_org,
                 "status": status, "limit": limit, "offset": offset or None, "sort": sort, "direction": direction}
        if snapshot_id or include_deleted or deleted_only or live:
            # Only the SDK list (Catalyst GET /sandbox) has these filters; its rows are full SandboxInfo.
            extra = {"snapshotId": snapshot_id, "includeDeleted": True if include_deleted else None,
                     "deletedOnly": True if deleted_only else None, "live": True if live else None}
            data = self._c("GET", "/sandbox", org_id, query={k: v for k, v in query.items() if k != "orgId"}
                           | extra)["data"]
            return data
        return self._json("GET", self.api_url, "/cli/sandbox", query=query)["data"]

    def sandbox_get(self, sandbox_id: str, *, org_id=None, include_deleted=False) -> dict:
        return self._c("GET", f"/sandbox/{quote(sandbox_id)}", org_id,
                       query={"includeDeleted": True if include_deleted else None})["data"]

    def sandbox_status(self, sandbox_id: str, *, wait_for=None, wait_ms=None, org_id=None) -> dict:
        return self._c("GET", f"/sandbox/status/{quote(sandbox_id)}", org_id,
                       query={"waitForStatus": ",".join(wait_for) if wait_for else None, "waitMs": wait_ms})["data"]

    def sandbox_destroy(self, sandbox_id: str, *, org_id=None) -> None:
        self._c("DELETE", f"/sandbox/{quote(sandbox_id)}", org_id)

    def sandbox_pause(self, sandbox_id: str, *, org_id=None) -> dict:
        env = self._c("POST", f"/sandbox/{quote(sandbox_id)}/pause", org_id)
        return {k: env[k] for k in ("sandboxId", "status", "checkpointId", "terminatesAt") if env.get(k) is not None}

    def sandbox_resume(self, sandbox_id: str, *, org_id=None) -> dict:
        self._c("POST", f"/sandbox/{quote(sandbox_id)}/resume", org_id)
        st = self.sandbox_status(sandbox_id, org_id=org_id)
        return {"sandboxId": sandbox_id, "status": st.get("status")}

    def sandbox_env(self, sandbox_id: str, set_vars: dict, delete: list, *, org_id=None) -> dict:
        env = dict(set_vars or {})
        env.update({k: None for k in delete or []})
        return self._c("PATCH", f"/sandbox/env/{quote(sandbox_id)}", org_id, body={"env": env})["data"]

    # executions ----------------------------------------------------------------------------------
    def execution_list(self, sandbox_id: str, *, limit=50, org_id=None) -> dict:
        return self._c("GET", f"/sandbox/sandboxes/{quote(sandbox_id)}/executions", org_id,
                       query={"limit": limit})["data"]

    def execution_get(self, execution_id: str, *, wait: str | None = None, org_id=None) -> dict:
        if isinstance(wait, (int, float)):
            wait = f"{int(wait * 1000)}ms"
        return self._c("GET", f"/sandbox/execution/{quote(execution_id)}", org_id, query={"wait": wait})["data"]

    def execution_output(self, execution_id: str, stream: str, out, *, org_id=None) -> None:
        if stream not in ("stdout", "stderr"):
            raise E.ValidationError("stream must be stdout or stderr")
        info = self.execution_get(execution_id, org_id=org_id)
        url = info.get(f"{stream}StreamUrl")
        if url:
            self._raw_get(url + "?v=2", out, auth=False)

    # jobs ----------------------------------------------------------------------------------------
    def job_create(self, sandbox_id: str, command: list[str], *, org_id=None) -> dict:
        return self._c("POST", f"/sandbox/sandboxes/{quote(sandbox_id)}/jobs", org_id,
                       body={"command": list(command)})["data"]

    def job_list(self, sandbox_id: str, *, limit=20, org_id=None) -> dict:
        return self._c("GET", f"/sandbox/sandboxes/{quote(sandbox_id)}/jobs", org_id, query={"limit": limit})["data"]

    def job_get(self, sandbox_id: str, job_id: str, *, org_id=None) -> dict:
        return self._c("GET", f"/sandbox/sandboxes/{quote(sandbox_id)}/jobs/{quote(job_id)}", org_id)["data"]

    def job_destroy(self, sandbox_id: str, job_id: str, *, force=False, org_id=None) -> dict:
        return self._c("DELETE", f"/sandbox/sandboxes/{quote(sandbox_id)}/jobs/{quote(job_id)}", org_id,
                       query={"force": True if force else None})["data"]

    def job_logs(self, sandbox_id: str, job_id: str, out, *, stream="stdout", follow=False, org_id=None) -> dict:
        if stream not in ("stdout", "stderr"):
            raise E.ValidationError("stream must be stdout or stderr")
        job = self.job_get(sandbox_id, job_id, org_id=org_id)
        url = job.get(f"{stream}StreamUrl")
        if url:
            self._raw_get(url + "?v=2" + ("&follow=true" if follow else ""), out, auth=False)
            if follow:
                job = self.job_get(sandbox_id, job_id, org_id=org_id)
        return {"jobId": job_id, "sandboxId": sandbox_id, "status": job.get("status")}

    # events, stats, runtimes ---------------------------------------------------------------------
    def events_list(self, sandbox_id: str, *, limit=50, direction="asc", org_id=None) -> dict:
        return self._c("GET", f"/sandbox/sandboxes/{quote(sandbox_id)}/events", org_id,
                       query={"limit": limit, "direction": direction})["data"]

    def stats(self, *, org_id=None, start=None, end=None) -> dict:
        org = self._org(org_id)
        return self._json("GET", self.catalyst_url, f"/services/stats/{quote(org)}",
                          query={"service": "sandbox", "start": start, "end": end},
                          extra_headers={"x-agentuity-orgid": org})["data"]

    def runtime_list(self, *, limit=50, offset=0, sort="created", direction="desc", org_id=None) -> dict:
        return self._c("GET", "/sandbox/runtimes", org_id,
                       query={"limit": limit, "offset": offset, "sort": sort, "direction": direction})["data"]

    # checkpoints ---------------------------------------------------------------------------------
    def checkpoint_create(self, sandbox_id: str, name: str, *, org_id=None) -> dict:
        return self._c("POST", f"/sandbox/{quote(sandbox_id)}/checkpoint", org_id, body={"name": name})["data"]

    def checkpoint_list(self, sandbox_id: str, *, org_id=None) -> dict:
        return self._c("GET", f"/sandbox/checkpoints/{quote(sandbox_id)}", org_id)["data"]

    def checkpoint_restore(self, sandbox_id: str, ref: str, *, org_id=None) -> dict:
        self._c("POST", f"/sandbox/{quote(sandbox_id)}/checkpoint/{quote(ref, safe='')}/restore", org_id)
        return {"sandboxId": sandbox_id, "checkpointId": ref}

    def checkpoint_delete(self, sandbox_id: str, ref: str, *, org_id=None) -> None:
        self._c("DELETE", f"/sandbox/{quote(sandbox_id)}/checkpoint/{quote(ref, safe='')}", org_id)

    # snapshots -----------------------------------------------------------------------------------
    def snapshot_create(self, sandbox_id: str, *, name=None, description=None, tag=None, public=False,
                        org_id=None) -> dict:
        body = {k: v for k, v in (("name", name), ("description", description), ("tag", tag)) if v is not None}
        body["public"] = bool(public)
        return self._c("POST", f"/sandbox/{quote(sandbox_id)}/snapshot", org_id, body=body)["data"]

    def snapshot_list(self, *, sandbox_id=None, limit=50, offset=0, sort="created", direction="desc",
                      org_id=None) -> dict:
        return self._c("GET", "/sandbox/snapshots", org_id,
                       query={"sandboxId": sandbox_id, "limit": limit, "offset": offset, "sort": sort,
                              "direction": direction})["data"]

    def snapshot_get(self, snapshot_id: str, *, org_id=None) -> dict:
        return self._c("GET", f"/sandbox/snapshots/{quote(snapshot_id, safe='')}", org_id)["data"]

    def snapshot_tag(self, snapshot_id: str, tag: str | None, *, org_id=None) -> dict:
        return self._c("PATCH", f"/sandbox/snapshots/{quote(snapshot_id, safe='')}", org_id, body={"tag": tag})["data"]

    def snapshot_delete(self, snapshot_id: str, *, org_id=None) -> None:
        self._c("DELETE", f"/sandbox/snapshots/{quote(snapshot_id, safe='')}", org_id)

    def snapshot_build(self, build, *, org_id=None) -> dict:
        """The hosted three-step build (wire doc §4.14): init, upload the archive, finalize.

        ``build`` is a mapping with ``init`` (the build-init body), ``archive`` (tar.gz bytes) and
        ``finalize`` (the finalize body); localsb.cli.snapshot_build.SnapshotBuild is one."""
        org = self._org(org_id)
        init_body = build["init"]
        init = self._c("POST", "/sandbox/snapshots/build", org, body=init_body)["data"]
        if init.get("unchanged"):
            return init
        snapshot_id = init["snapshotId"]
        archive = build.get("archive") or b""
        if init.get("uploadUrl"):
            resp = self._send("PUT", init["uploadUrl"], archive, {"Content-Type": "application/gzip"})
            if not 200 <= resp.status < 300:
                raise self._error(resp.status, resp.data, resp.getheader("Content-Type", ""), init["uploadUrl"])
        else:
            self._c("PUT", f"/sandbox/snapshots/{quote(snapshot_id)}/upload", org, raw=archive,
                    content_type="application/gzip")
        info = self._c("POST", f"/sandbox/snapshots/{quote(snapshot_id)}/finalize", org,
                       body=build["finalize"])["data"]
        info["runtime"] = init_body.get("runtime")  # as the local backend reports it
        return info

    # files ---------------------------------------------------------------------------------------
    def fs_write(self, sandbox_id: str, files: list, *, org_id=None) -> dict:
        env = self._c("POST", f"/fs/{quote(sandbox_id)}", org_id, body={"files": [f.to_wire() for f in files]})
        written = (env.get("data") or {}).get("filesWritten", env.get("filesWritten", len(files)))
        return {"filesWritten": written}

    def fs_read(self, sandbox_id: str, path: str, out, *, org_id=None) -> int:
        org = self._org(org_id)
        return self._raw_get(f"{self.catalyst_url}/fs/{quote(sandbox_id)}?" + urlencode({"path": path, "orgId": org}),
                             out)

    def fs_list(self, sandbox_id: str, path: str = ".", *, org_id=None) -> dict:
        return self._c("GET", f"/fs/list/{quote(sandbox_id)}", org_id, query={"path": path})["data"]

    def fs_mkdir(self, sandbox_id: str, path: str, *, recursive=False, org_id=None) -> None:
        self._c("POST", f"/fs/mkdir/{quote(sandbox_id)}", org_id, body={"path": path, "recursive": bool(recursive)})

    def fs_rm(self, sandbox_id: str, path: str, *, org_id=None) -> bool:
        return bool(self._c("POST", f"/fs/rm/{quote(sandbox_id)}", org_id, body={"path": path}).get("found", True))

    def fs_rmdir(self, sandbox_id: str, path: str, *, recursive=False, org_id=None) -> bool:
        env = self._c("POST", f"/fs/rmdir/{quote(sandbox_id)}", org_id,
                      body={"path": path, "recursive": bool(recursive)})
        return bool(env.get("found", True))

    def fs_download(self, sandbox_id: str, path: str, fmt: str, out, *, org_id=None) -> int:
        org = self._org(org_id)
        return self._raw_get(f"{self.catalyst_url}/fs/download/{quote(sandbox_id)}?"
                             + urlencode({"path": path, "format": fmt, "orgId": org}), out)

    def fs_upload(self, sandbox_id: str, path: str, fmt: str, src, *, org_id=None) -> None:
        org = self._org(org_id)
        url = (f"{self.catalyst_url}/fs/upload/{quote(sandbox_id)}?"
               + urlencode({"path": path, "format": fmt, "orgId": org}))
        # Raw archive, chunked, as the official CLI sends it (wire doc §4.16); never retried.
        resp = self._send("POST", url, _chunks(src), self._headers("application/octet-stream"))
        if not 200 <= resp.status < 300:
            raise self._error(resp.status, resp.data, resp.getheader("Content-Type", ""), url)
        try:
            obj = json.loads(resp.data or b"{}")
        except ValueError:
            obj = {}
        if isinstance(obj, dict) and obj.get("success") is False:
            raise E.from_code(obj.get("code"), obj.get("message") or "upload failed", resp.status)

    def close(self) -> None:
        for conn in self._conns.by_origin.values():
            conn.close()
        self._conns.by_origin.clear()


def _stale(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive socket that is readable has been closed by the server (or holds junk):
    open a fresh one before sending, rather than learn it from a lost request."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _chunks(src, size: int = 1 << 16):
    while True:
        chunk = src.read(size)
        if not chunk:
            return
        yield chunk


def _flush(out) -> None:
    try:
        out.flush()
    except (AttributeError, OSError, ValueError):
        pass
