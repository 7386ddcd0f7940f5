"""Tasks that read PE's status API (``/status/v1/services``) over TLS, and probe PE's ports."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

from prefect import task

from pe_ha.commands import Command
from pe_ha.context import RunContext
from pe_ha.errors import ApiError
from pe_ha.pe_api import PE_PORTS, PUPPETSERVER, STATUS_PORTS
from tasks._base import READ


@task(name="read-status-api", task_run_name="status-api/{host}", cache_policy=READ["cache_policy"], retries=0)
def host_status(ctx: RunContext, host: str, ports: tuple[int, ...] = STATUS_PORTS) -> list[dict]:
    """Every service's state on ``host``; an unreachable port is reported, not raised (bounded by the connect timeout)."""
    api = ctx.api
    rows: list[dict] = []
    for port in ports:
        try:
            for st in api.services_status(host, port):
                rows.append({"host": host, "port": port, "service": st.service, "state": st.state,
                             "alerts": "; ".join(f"{a.get('severity', 'error')}: {a.get('message', '')}" for a in st.alerts),
                             "failing_alerts": len(st.errors),
                             "sync": _sync(st.status), "replication": _replication(st.status)})
        except ApiError as exc:
            rows.append({"host": host, "port": port, "service": f"port {port}", "state": "unreachable",
                         "alerts": exc.message, "failing_alerts": 1, "sync": "", "replication": ""})
            if exc.status is None and port == ports[0]:
                # The first port timed out: the host is down or cut off; don't wait out every other port too.
                for other in ports[1:]:
                    rows.append({"host": host, "port": other, "service": f"port {other}", "state": "unreachable",
                                 "alerts": "host unreachable", "failing_alerts": 1, "sync": "", "replication": ""})
                break
    return rows


def _sync(status: dict | None) -> str:
    sync = (status or {}).get("sync_status") if isinstance(status, dict) else None
    return str(sync.get("state", "")) if isinstance(sync, dict) else ""


def _replication(status: dict | None) -> str:
    rep = (status or {}).get("replication") if isinstance(status, dict) else None
    return f"{rep.get('mode')}/{rep.get('status')}" if isinstance(rep, dict) else ""


@task(name="probe-ports-from-worker", task_run_name="probe-ports/{host}", cache_policy=READ["cache_policy"], retries=0)
def open_ports_from_worker(ctx: RunContext, host: str, timeout_s: float = 3.0) -> list[int]:
    """PE ports on ``host`` that accept a TCP connection from the worker (probed in parallel)."""
    entry = ctx.settings.host(host)

    def probe(port: int) -> int | None:
        try:
            socket.create_connection((entry.ssh_address, port), timeout=timeout_s).close()
            return port
        except OSError:
            return None

    with ThreadPoolExecutor(len(PE_PORTS)) as pool:
        return sorted(p for p in pool.map(probe, PE_PORTS) if p is not None)


@task(name="probe-ports-from-host", task_run_name="probe-ports-from-{from_host}",
      cache_policy=READ["cache_policy"], retries=0)
def open_ports_from_host(ctx: RunContext, from_host: str, probe: Command, timeout_s: int = 3) -> list[int]:
    """The ports that ``probe`` (``commands.tcp_probe_ports``) finds open from ``from_host``, over SSH."""
    result = ctx.executor.run(from_host, probe, check=False, timeout_s=timeout_s + 10, stream=False)
    return sorted(int(line) for line in result.stdout.split() if line.isdigit())


@task(name="code-manager-status", task_run_name="code-manager-status/{host}", **READ)
def code_manager_running(ctx: RunContext, host: str) -> bool | None:
    """Code Manager's entry in the status API on 8140 (where PE reports it): True running, False absent or not
    running, None when the status API could not be read."""
    try:
        rows = ctx.api.services_status(host, PUPPETSERVER)
    except ApiError:
        return None
    return any(r.service == "code-manager-service" and r.running for r in rows)
