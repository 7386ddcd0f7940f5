"""A real Prefect stack for the demo and the integration tests: server, deployments, workers, REST calls.

Telemetry is off (PREFECT_SERVER_ANALYTICS_ENABLED=false, DO_NOT_TRACK=1); the server binds to
127.0.0.1 only. SQLite is the default database; pass ``database_url`` for PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a server, a webhook receiver or a throw-away PostgreSQL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"


def base_env(home: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false", "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5", "PEHA_PAUSE_POLL_S": "1", "PEHA_PROJECT_DIR": str(ROOT),
        "PREFECT_LOGGING_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
        # Leases on disk: with the default (memory), a server restart forgets every lease while the slots stay
        # taken, so the installation's lock would never be free again (README, "One procedure at a time").
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
    })
    return env


@dataclass
class WebhookReceiver:
    """A local HTTP endpoint that records what the alert automation sends."""

    port: int = 4205
    received: list[dict] = field(default_factory=list)

    def start(self) -> WebhookReceiver:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    received.append(json.loads(body))
                except ValueError:
                    received.append({"raw": body.decode(errors="replace")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/pe-ha-alerts"

    def stop(self) -> None:
        self.server.shutdown()


@dataclass
class PrefectStack:
    home: Path
    port: int = 4200
    database_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen] = field(default_factory=list)
    server: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    worker: subprocess.Popen | None = None  # the worker a test is watching (or killing)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        env = base_env(self.home, self.port)
        if self.database_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def _spawn(self, argv: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        self.home.mkdir(parents=True, exist_ok=True)
        out = open(self.home / log, "a")
        proc = subprocess.Popen(argv, env={**self.env(), **(env or {})}, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes.append(proc)
        return proc

    def start_server(self, timeout_s: float = 120) -> float:
        started = time.monotonic()
        self.server = self._spawn([str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                   str(self.port)], "server.log")
        while time.monotonic() - started < timeout_s:
            try:
                if httpx.get(f"{self.api}/health", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Prefect server did not answer within {timeout_s} s; see {self.home / 'server.log'}")

    def stop_server(self) -> None:
        """Stop the server only (SIGTERM, as a restart would), keeping its database and the workers."""
        server = self.server
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        self.processes = [p for p in self.processes if p is not server]
        self.server = None

    def run(self, *argv: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
        r = subprocess.run([str(VENV_BIN / argv[0]), *argv[1:]], env={**self.env(), **(env or {})}, cwd=ROOT, capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{r.stdout}\n{r.stderr}")
        return r.stdout

    def setup_and_deploy(self, installation: str, webhook_url: str, env: dict[str, str] | None = None) -> None:
        """`pe-ha setup`, as the README has it: the installation's objects and deployments, from its settings."""
        self.run("pe-ha", "setup", "--webhook-url", webhook_url, env={"PEHA_INSTALLATION": installation, **(env or {})})

    def start_worker(self, name: str = "worker-1", installation: str = "lab",
                     env: dict[str, str] | None = None) -> subprocess.Popen:
        """A process worker serving one installation's work queue, with that installation's settings."""
        worker = self._spawn([str(VENV_BIN / "prefect"), "worker", "start", "--pool", "pe-ha", "--work-queue",
                              installation, "--name", name, "--type", "process"], f"{name}.log",
                             env={"PEHA_INSTALLATION": installation, **(env or {})})
        self.workers.append(worker)
        return worker

    def stop_workers(self, *, idle: bool = False) -> None:
        """Stop the workers (SIGTERM, as systemd would), keeping the server. ``idle``: they run nothing, so
        SIGKILL at once (a worker's graceful shutdown takes seconds that a test swapping workers need not wait)."""
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL if idle else signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes = [p for p in self.processes if p not in self.workers]
        self.workers.clear()

    @contextlib.contextmanager
    def worker_with(self, name: str, env: dict[str, str]) -> Iterator[subprocess.Popen]:
        """The same server and deployments, served for the block by one worker with these settings (a worker
        setting such as the approval policy cannot come from whoever starts a run); an ordinary worker after."""
        self.stop_workers(idle=True)
        self.worker = self.start_worker(name, env=env)
        try:
            yield self.worker
        finally:
            self.stop_workers(idle=True)
            self.worker = self.start_worker("worker-1")

    # -- REST ---------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        """One REST call; 503/429 (SQLite's "database is locked") are retried with backoff, as Prefect's client does."""
        for attempt in range(8):
            r = httpx.request(method, f"{self.api}{path}", timeout=30, **kw)
            if r.status_code not in (429, 503):
                return r
            time.sleep(min(0.25 * 2 ** attempt, 4))
        return r

    def deployment_id(self, flow: str, deployment: str) -> str:
        r = self._request("GET", f"/deployments/name/{flow}/{deployment}")
        r.raise_for_status()
        return r.json()["id"]

    def create_run(self, flow: str, deployment: str, parameters: dict | None = None) -> dict:
        dep = self.deployment_id(flow, deployment)
        r = self._request("POST", f"/deployments/{dep}/create_flow_run", json={"parameters": parameters or {}})
        r.raise_for_status()
        return r.json()

    def runs_of(self, flow: str, deployment: str, limit: int = 2000) -> list[dict]:
        """The deployment's flow runs, newest first (paged: the API serves at most 200 per call)."""
        dep, runs = self.deployment_id(flow, deployment), []
        while len(runs) < limit:
            r = self._request("POST", "/flow_runs/filter", json={
                "deployments": {"id": {"any_": [dep]}}, "sort": "EXPECTED_START_TIME_DESC",
                "limit": min(200, limit - len(runs)), "offset": len(runs)})
            r.raise_for_status()
            page = r.json()
            runs += page
            if len(page) < 200:
                break
        return runs

    def flow_run(self, run_id: str) -> dict:
        r = self._request("GET", f"/flow_runs/{run_id}")
        r.raise_for_status()
        return r.json()

    def wait(self, run_id: str, timeout_s: float = 600, until: set[str] | None = None) -> dict:
        until = until or TERMINAL
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.flow_run(run_id)
            state = (run.get("state") or {}).get("type")
            if state in until:
                return run
            if state in TERMINAL:  # it ended without reaching what the caller waits for: say why, now
                raise AssertionError(f"flow run {run_id} ended before reaching {sorted(until)}:\n{self.explain(run_id)}")
            time.sleep(0.5)
        raise TimeoutError(f"flow run {run_id} did not reach {until} in {timeout_s} s")

    def explain(self, run_id: str, lines: int = 25) -> str:
        """The run's final state message and its last log lines: what a failed assertion should print."""
        run = self.flow_run(run_id)
        r = self._request("POST", "/logs/filter", json={
            "logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_DESC", "limit": lines})
        logs = r.json() if r.status_code == 200 else []
        state = run.get("state") or {}
        text = [f"{run.get('name')}: {state.get('type')}: {state.get('message')}"]
        text += [f"  {entry['level']:>2} {entry['message'][:400]}" for entry in reversed(logs)]
        return "\n".join(text)

    def resume(self, run_id: str, run_input: dict) -> dict:
        r = self._request("POST", f"/flow_runs/{run_id}/resume", json={"run_input": run_input})
        return {"http": r.status_code, **r.json()}

    def cancel(self, run_id: str) -> None:
        self._request("POST", f"/flow_runs/{run_id}/set_state",
                      json={"state": {"type": "CANCELLING"}, "force": True}).raise_for_status()

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.processes.clear()
