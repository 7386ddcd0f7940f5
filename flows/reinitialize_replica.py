"""Reinitialize a replica — PE guide, "Reinitialize a replica" (all databases, or some).

1. The PE version is one pe-ha supports, and its ``reinitialize --db`` accepts each database asked for
   (``pe-inventory`` from 2023.8).
2. The master must be fully functional and reachable: every service on its status API is running.
3. Approval pause (unless approved up front).
4. ``puppet infrastructure reinitialize replica [--db …] -y`` on the replica.
"""


from prefect import flow

from flows._common import run_name
from flows._entry import with_run_context
from flows._lock import installation_lock
from flows._steps import Outcome, Procedure, Step, read_facts
from pe_ha import commands
from pe_ha.context import RunContext
from pe_ha.errors import PreconditionFailed
from pe_ha.validation import ReplicaDatabase, replica_database
from tasks import infrastructure, status_api


@flow(name="reinitialize-replica", flow_run_name=run_name("reinitialize-replica", "replica", "replica"))
@with_run_context
@installation_lock("reinitialize-replica")
def reinitialize_replica(ctx: RunContext, databases: list[ReplicaDatabase] | None = None, replica: str | None = None,
                         master: str | None = None, approve: bool = False, dry_run: bool = False):
    """Destroy and re-create the replica's databases (``databases`` empty or None = all).

    Args:
        databases: Databases to reinitialize: pe-activity, pe-classifier, pe-orchestrator, pe-rbac, and (PE 2023.8
            and later) pe-inventory; empty means all.
        replica: The replica's certname; empty means the replica from the inventory (PEHA_REPLICA).
        master: The master to run on; empty means the inventory's master.
        approve: Give the approval up front; otherwise the run pauses before the destructive step and waits for an
            operator.
        dry_run: Validate and show the plan (every command and where it runs) without running anything.
    """
    master, replica = ctx.settings.master_and_replica(master, replica)
    dbs = [replica_database(d) for d in (databases or [])]
    cmd = commands.reinitialize_replica(dbs)

    version = read_facts(ctx, "reinitialize-replica", lambda: infrastructure.pe_version(ctx, master), approve=approve)
    lacking = [d for d in dbs if d not in version.reinitialize_databases]
    if lacking:
        raise PreconditionFailed(
            f"PE {version}'s `puppet infrastructure reinitialize replica --db` does not accept {', '.join(lacking)}",
            hint=f"choose from {', '.join(version.reinitialize_databases)}; pe-inventory arrived with PE 2023.8")

    def master_is_healthy() -> None:
        rows = status_api.host_status(ctx, master)
        bad = [f"{r['service']}: {r['state']}" for r in rows if r["state"] != "running"]
        if bad:
            raise PreconditionFailed(f"the master {master} is not fully functional ({'; '.join(bad)})",
                                     hint="reinitialize needs a healthy master; fix it first (verify-health shows details)")

    procedure = Procedure(ctx, "reinitialize-replica", replica, topology_on=master, facts=[f"PE {version} on {master}"], steps=[
        Step("master-health", "is the master healthy and reachable?", master, master_is_healthy,
             note=f"GET https://{master}:<4433, 8140, 8143, 8081>/status/v1/services: every service running"),
        Step("approval", "operator approval", "operator", lambda: None,
             approval=f"Reinitialize {', '.join(dbs) or 'all databases'} on {replica}: they are destroyed and "
                      "re-created from the master; the replica cannot serve failover meanwhile."),
        Step("reinitialize", cmd.description, replica, lambda: infrastructure.reinitialize_replica(ctx, replica, cmd),
             commands=[(replica, cmd)], destructive=True),
    ])
    if dry_run:
        return procedure.plan()
    finished = procedure.run(lambda _: Outcome("reinitialized", next_steps=[
        "Run verify-health: replication should show as running."]), approve=approve)
    if not finished.completed:
        return finished.cancelled()  # nothing done
    return {"replica": replica, "databases": dbs or "all"}
