"""Run ``mockcloud serve`` as a child process, for integration tests, conformance runs and benches.

    with ServerProcess(state_dir, engine_state=...) as mc:
        key = mc.key("acme")           # {"key", "orgId", "orgName", "id"}
        env = mc.client_env(key)       # the official CLI's / cloud backend's variables

``stop()`` sends SIGTERM to the one process it started and waits for it.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ServerProcess:
    def __init__(self, state_dir: str, *, engine_state: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, env: dict | None = None):
        self.state_dir, self.engine_state, self.host, self.port = state_dir, engine_state, host, port
        self.env = dict(os.environ if env is None else env)
        self.env["PYTHONPATH"] = ROOT + (os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else "")
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.log_path = os.path.join(state_dir, "mockcloud.log")

    def _cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mockcloud", *args]

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        os.makedirs(self.state_dir, exist_ok=True)
        cmd = self._cmd("serve", "--host", self.host, "--port", str(self.port), "--state-dir", self.state_dir)
        if self.engine_state:
            cmd += ["--engine-state", self.engine_state]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                     env=self.env, cwd=ROOT)
        log.close()
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"mockcloud did not start; log: {self.log()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                ch = os.read(self.proc.stdout.fileno(), 1)
                if not ch:
                    continue
                line += ch
        self.url = line.decode().strip()
        return self

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as fh:
                return fh.read()[-4000:]
        except OSError:
            return ""

    def key(self, org: str) -> dict:
        out = subprocess.run(self._cmd("keys", "create", "--org", org, "--state-dir", self.state_dir, "--json"),
                             capture_output=True, text=True, env=self.env, cwd=ROOT, check=True).stdout
        return json.loads(out)

    def client_env(self, key: dict, *, org: bool = True) -> dict:
        env = {"AGENTUITY_API_URL": self.url, "AGENTUITY_CATALYST_URL": self.url,
               "AGENTUITY_STREAM_URL": self.url, "AGENTUITY_API_KEY": key["key"], "AGENTUITY_REGION": "usc"}
        if org:
            env["AGENTUITY_CLOUD_ORG_ID"] = key["orgId"]
        return env

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def restart(self) -> "ServerProcess":
        self.stop()
        return self.start()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
