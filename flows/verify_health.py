"""Verify health — read every PE service's status API on master and replica; alert when something is wrong.

Read-only: it takes no lock. Connect timeouts keep it fast when a host is down. It reports a table
artifact, emits ``pe-ha.health.degraded`` / ``pe-ha.health.ok`` events, and fails when anything is not
running, so a Prefect automation can alert.
"""


from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event
from prefect.task_runners import ThreadPoolTaskRunner

from flows._common import log
from flows._entry import run_context
from flows._lock import check_run_is_for_this_installation
from flows._steps import Procedure, Step
from pe_ha.context import RunContext
from pe_ha.errors import PreconditionFailed
from pe_ha.pe_api import REPLICA_STATUS_PORTS, STATUS_PORTS
from tasks import status_api


@flow(name="verify-health", flow_run_name="verify-health/{installation}", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def verify_health(installation: str = "default", fail_on_degraded: bool = True, master: str | None = None,
                  replica: str | None = None, dry_run: bool = False) -> dict:
    """Status of every PE service on the master and the replica (defaults: the configured ones).

    Args:
        installation: Name of the PE installation, used in alerts and event names.
        fail_on_degraded: End the run as Failed when any service is not running (this is what triggers the alert).
        master: Master to check; empty means the inventory's master.
        replica: Replica to check; empty means the inventory's replica (skipped when there is none).
        dry_run: Validate and show the plan (what is read, and where) without reading anything.
    """
    resource = {"prefect.resource.id": f"pe-ha.installation.{installation}", "prefect.resource.name": installation}
    try:
        with run_context() as ctx:  # inside the try: a failure to read the settings is alerted too
            s = ctx.settings
            resource = {"prefect.resource.id": f"pe-ha.installation.{s.installation}",
                        "prefect.resource.name": s.installation}
            check_run_is_for_this_installation(s.installation)
            return _check(ctx, resource, fail_on_degraded, master, replica, dry_run)
    except PreconditionFailed:
        raise  # degraded: its event is out already
    except Exception as exc:  # every failure reaches the one health alert, then is raised as it was
        emit_event(event="pe-ha.health.degraded", resource=resource,
                   payload={"healthy": 0, "total": 0, "problems": [f"the health check could not run: {exc}"]})
        raise


def _check(ctx: RunContext, resource: dict, fail_on_degraded: bool, master: str | None, replica: str | None,
           dry_run: bool) -> dict:
    s = ctx.settings
    master = s.pick_host(master, default=s.master.name, what="master")
    replica_host = (s.pick_host(replica, default=s.replica.name if s.replica else None, what="replica")
                    if (replica or s.replica) else None)
    reads = [(master, STATUS_PORTS)] + ([(replica_host, REPLICA_STATUS_PORTS)] if replica_host else [])
    if dry_run:  # read-only: no summary of steps, only the plan of its reads
        return Procedure(ctx, "verify-health", s.installation, [
            Step(f"status-{host}", f"status of {host}", "worker", lambda: None,
                 note=f"GET https://{host}:<{', '.join(map(str, ports))}>/status/v1/services") for host, ports in reads
        ]).plan()
    futures = [status_api.host_status.submit(ctx, host, ports) for host, ports in reads]
    rows = [row for f in futures for row in f.result()]
    # Warning-level alerts are shown in the table but do not fail health; error-level ones do.
    bad = [r for r in rows if r["state"] != "running" or r.get("failing_alerts")]
    create_table_artifact(key=f"pe-health-{s.installation}", table=rows,
                          description=f"PE service status: {len(rows) - len(bad)} of {len(rows)} healthy")
    summary: dict[str, Any] = {"healthy": len(rows) - len(bad), "total": len(rows),
               "problems": [f"{r['host']} {r['service']}: {r['state']} {r['alerts']}".strip() for r in bad]}
    if bad:
        emit_event(event="pe-ha.health.degraded", resource=resource, payload=summary)
        for line in summary["problems"]:
            log().error("%s", line)
        if fail_on_degraded:
            raise PreconditionFailed(f"{len(bad)} of {len(rows)} PE services are not healthy: "
                                     + "; ".join(summary["problems"][:5]))
    else:
        emit_event(event="pe-ha.health.ok", resource=resource, payload=summary)
        log().info("all %d PE services are running", len(rows))
    return summary
