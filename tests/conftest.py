"""Shared fixtures. Prefect runs against a session-scoped test harness (telemetry off)."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT", "false")

import contextlib  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def local_sshd(tmp_path_factory: pytest.TempPathFactory):
    """A private sshd on 127.0.0.1 for executor integration tests (key login as root)."""
    sshd = Path("/usr/sbin/sshd")
    if not sshd.exists() or os.geteuid() != 0:
        pytest.skip("needs root and openssh-server (make test installs it)")
    d = tmp_path_factory.mktemp("sshd")
    d.chmod(0o755)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "client_key")], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    from lab.stack import free_port

    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "Subsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    proc = subprocess.Popen([str(sshd), "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "w"))
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield {"dir": d, "port": port, "key": d / "client_key", "known_hosts": d / "known_hosts"}
    proc.terminate()
    proc.wait(timeout=10)


def make_settings(tmp_path: Path, **overrides):
    """Settings for unit tests: real files in ``tmp_path``, a three-node inventory."""
    from pe_ha.settings import load_settings

    for name, text in {"key": "k", "known_hosts": "", "token": "tok-unit-0123456789", "ca.pem": "ca"}.items():
        (tmp_path / name).write_text(text)
    values: dict = {
        "installation": "unit",
        "master": {"name": "master.example.com"},
        "replica": {"name": "replica.example.com"},
        "managed_nodes": [{"name": "agent1.example.com"}, {"name": "agent2.example.com"}],
        "ssh_key_file": tmp_path / "key",
        "ssh_known_hosts_file": tmp_path / "known_hosts",
        "rbac_token_file": tmp_path / "token",
        "ca_cert": tmp_path / "ca.pem",
        "pg_os_user": "pe-postgres",
    }
    values.update(overrides)
    return load_settings(**values)


@contextlib.contextmanager
def prefect_server_on_postgres() -> Iterator[None]:
    """Prefect's test harness, on PostgreSQL instead of SQLite: on SQLite two concurrent writes (a run's labels,
    the lock holder's variable, the task-run recorder) collide as "database is locked", and the client backs off
    2 s each time (../shared/reference/prefect-3.9-notes.md). The unit tests wrote about one such pause per
    flow. The production set-up's SQLite server is tested on the lab's stack."""
    import prefect.context
    import prefect.settings
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.server.database.dependencies import temporary_database_interface

    from lab.pgserver import LocalPostgres
    from lab.stack import free_port

    port = free_port()
    pg = LocalPostgres(data_dir=Path("/var/tmp/pe-ha-prefect-pg") / str(port), port=port).start()
    try:
        with temporary_database_interface(), prefect.settings.temporary_settings(
                {prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL: pg.url}):
            server = SubprocessASGIServer(port=free_port())
            SubprocessASGIServer._instances[None] = server  # as the harness does: no second, ephemeral server
            server.start(timeout=120)
            try:
                # The global settings too, as the harness sets them: a thread of ours (the progress labels)
                # starts from them, not from this thread's context.
                with prefect.settings.temporary_settings({prefect.settings.PREFECT_API_URL: server.api_url}), \
                        prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()):
                    yield
            finally:
                _drain_logs_and_events()  # before the server goes, as the harness does
                SubprocessASGIServer._instances.pop(None, None)
                server.stop()
    finally:
        pg.stop()


def _drain_logs_and_events() -> None:
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        for drained in (APILogWorker.instance().drain(), EventsWorker.drain_all()):
            if inspect.isawaitable(drained):
                await drained

    try:
        run_coro_as_sync(drain())
    except RuntimeError:  # a worker that never started has nothing to drain
        pass


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the session; the flow heartbeat (about 1 s per flow) is off."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with prefect_server_on_postgres(), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        from deployments.setup import ensure_lock

        for installation in ("unit", "lab"):
            ensure_lock(installation)
        yield


def fake_pe_api(settings, *, token_expires_in: float = 36000, status: dict | None = None, groups: list | None = None,
                token_status: int = 200, job_nodes: list[tuple[str, str]] | None = None):
    """A PEApi whose HTTP goes to an httpx.MockTransport: RBAC, classifier, status and orchestrator endpoints.
    An orchestrator job answers with PE's samples; ``job_nodes`` gives its nodes' (name, state) instead of the
    sample's, and the job then ends ``failed`` if one of them did not finish."""
    import datetime as _dt
    import json as _json
    import time as _time

    import httpx

    from pe_ha.pe_api import PEApi

    calls: list[str] = []
    # By default, an installation whose replica was enabled (PE records it in ha_enabled_replicas).
    enabled = [settings.replica.name] if settings.replica else []
    state = {"groups": groups if groups is not None else [
        {"name": "PE Agent", "id": "agent-id", "parent": "root", "rule": None, "classes": {}},
        {"name": "PE Infrastructure", "id": "infra-id", "parent": "root",
         "classes": {"puppet_enterprise": {"ha_enabled_replicas": enabled}}}]}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.host}:{request.url.port}{request.url.path}")
        path = request.url.path
        if path == "/rbac-api/v2/auth/token/authenticate":
            if token_status != 200:
                return httpx.Response(token_status, json={"kind": "puppetlabs.rbac/token-expired", "msg": "expired"})
            expiration = _dt.datetime.fromtimestamp(_time.time() + token_expires_in, _dt.UTC)
            return httpx.Response(200, json={"login": "admin", "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ")})
        if path == "/classifier-api/v1/groups" and request.method == "GET":
            return httpx.Response(200, json=state["groups"])
        if path.startswith("/classifier-api/v1/groups") and request.method == "POST":
            body = _json.loads(request.content)
            state["groups"].append(body)
            return httpx.Response(200, json=body)
        if path == "/status/v1/services":
            default = {"svc": "running"}
            if request.url.port == 8140:  # PE reports Code Manager on 8140
                default["code-manager-service"] = "running"
            per_host = (status or {}).get(request.url.host, default)
            body = {k: {"state": v, "status": {}, "active_alerts": []} for k, v in per_host.items()}
            code = 200 if all(v == "running" for v in per_host.values()) else 503
            return httpx.Response(code, json=body)
        if path.startswith("/orchestrator/v1/"):
            return orchestrator(request, path)
        return httpx.Response(404, json={"kind": "not-found"})

    samples = Path(__file__).parent / "contract" / "samples"
    state["job_nodes"] = list(job_nodes or [])  # a test may change it before the job is read

    def orchestrator(request: httpx.Request, path: str) -> httpx.Response:
        nodes = [{"name": n, "state": st, "details": {"message": f"{n}: {st}"}} for n, st in state["job_nodes"]]
        if path == "/orchestrator/v1/command/deploy" and request.method == "POST":
            state["deploy"] = _json.loads(request.content)
            return httpx.Response(202, json=_json.loads((samples / "orchestrator-deploy-202.json").read_text()))
        if path == "/orchestrator/v1/command/stop" and request.method == "POST":
            state["stopped"] = _json.loads(request.content)
            return httpx.Response(202, json={"job": {"id": "x", "name": "1234"}})
        if path == "/orchestrator/v1/jobs/1234":
            job = _json.loads((samples / "orchestrator-job-200.json").read_text())
            if any(n["state"] != "finished" for n in nodes):
                job["state"] = "failed"
            return httpx.Response(200, json=job)
        if path == "/orchestrator/v1/jobs/1234/nodes":
            body = _json.loads((samples / "orchestrator-job-nodes-200.json").read_text())
            body["items"] = nodes or [dict(body["items"][0])]
            return httpx.Response(200, json=body)
        return httpx.Response(404, json={"kind": "puppetlabs.orchestrator/unknown-job", "msg": path})

    api = PEApi(settings, transport=httpx.MockTransport(handler))
    api.calls = calls  # type: ignore[attr-defined]
    api.state = state  # type: ignore[attr-defined]
    return api


def status_json(host: str, state: str = "running", *compilers: str) -> str:
    """`puppet infrastructure status --format json` of a healthy (or ``state``) host, and of ``compilers``, in the
    shape of PE's capture (contract sample infra-status-json-replica-unreachable.json): ``type`` is the kind."""
    import json

    return json.dumps([{"service": service, "state": state, "status": {}, "display_name": service, "server": server,
                        "url": f"https://{server}:{port}/", "type": kind, "alerts": []}
                       for server in (host, *compilers)
                       for service, kind, port in (("puppetdb-status", "puppetdb", 8081), ("pe-master", "master", 8140))])


CLEAN_AGENT_SUMMARY = (Path(__file__).parent / "contract" / "samples" / "agent-last-run-summary-clean.yaml").read_text()


def answer_agent_summary(fake, text: str = CLEAN_AGENT_SUMMARY, host: str | None = None) -> None:
    """Every node's ``last_run_summary.yaml`` read answers ``text`` (default: Puppet's own clean summary)."""
    from pe_ha import commands

    fake.script(host, commands.agent_last_run_summary().argv, stdout=text, override=True)


def answer_link_probe(fake, targets, arrivals: str = "1000.000000000\n1000.010000000\n") -> None:
    """The fast copy's link probe to each of ``targets`` answers ``arrivals`` (default: 20 MiB in 10 ms)."""
    from pe_ha import commands

    for target in targets:
        fake.script(None, commands.link_probe(target).argv, stdout=arrivals)


@pytest.fixture()
def env(tmp_path):
    """A fake executor and a fake PE API installed for one test, with the unit-test settings."""
    from pe_ha import context
    from pe_ha.fake_executor import FakeExecutor

    settings = make_settings(tmp_path, backup_dir=tmp_path / "backups")
    fake = FakeExecutor()
    answer_agent_summary(fake)
    answer_link_probe(fake, [h.name for h in settings.all_hosts()])
    api = fake_pe_api(settings)
    with context.using(executor=fake, api=api, settings=settings):
        yield fake, api, settings


@pytest.fixture()
def ctx(env):
    """The run context ``env`` gives the flows, for calling tasks and steps directly."""
    from pe_ha import context

    return context.given()
