"""Forget a replica — PE guide, "Forget a replica". Only when the replica is permanently offline.

1. Refuse while the replica still answers on any PE port (from the worker).
2. Approval pause (unless approved up front).
3. ``puppet infrastructure forget <replica>`` on the master.
4. Show that the replica is purged: ``puppet infrastructure status`` no longer lists it.
"""


from prefect import flow

from flows._common import run_name
from flows._entry import with_run_context
from flows._lock import installation_lock
from flows._steps import Outcome, Procedure, Step, check_token, read_facts, remove_token, stage_token
from pe_ha import commands
from pe_ha.context import RunContext
from pe_ha.errors import PostconditionFailed, PreconditionFailed
from tasks import infrastructure, status_api


@flow(name="forget-replica", flow_run_name=run_name("forget-replica", "replica", "replica"))
@with_run_context
@installation_lock("forget-replica")
def forget_replica(ctx: RunContext, replica: str | None = None, master: str | None = None, approve: bool = False, dry_run: bool = False):
    """Decommission ``replica``: classification and database state are cleaned up on the master.

    Args:
        replica: The replica's certname; empty means the replica from the inventory (PEHA_REPLICA).
        master: The master to run on; empty means the inventory's master.
        approve: Give the approval up front; otherwise the run pauses before the destructive step and waits for an
            operator.
        dry_run: Validate and show the plan (every command and where it runs) without running anything.
    """
    s = ctx.settings
    master, replica = s.master_and_replica(master, replica)
    forget_cmd = commands.forget_replica(replica, token_file=s.remote_token_file)
    status_cmd = commands.infrastructure_status()

    def replica_is_offline() -> None:
        answering = status_api.open_ports_from_worker(ctx, replica)
        if answering:
            raise PreconditionFailed(f"{replica} still answers on PE ports {answering}",
                                     hint="forget only a replica that is permanently offline; shut it down first")

    def replica_is_purged() -> list[dict]:
        entries = infrastructure.infrastructure_status(ctx, master)
        if [e for e in entries if e.get("server") == replica]:
            raise PostconditionFailed(f"{replica} is still listed by puppet infrastructure status after forget")
        return entries

    version = read_facts(ctx, "forget-replica", lambda: infrastructure.pe_version(ctx, master), approve=approve)
    procedure = Procedure(ctx, "forget-replica", replica, topology_on=master, facts=[f"PE {version} on {master}"], steps=[
        Step("offline", "is the replica permanently offline?", replica, replica_is_offline,
             note=f"TCP probe from the worker of {replica} on PE ports {list(status_api.PE_PORTS)}"),
        Step("approval", "operator approval", "operator", lambda: None,
             approval=f"Forget {replica} on {master}: its classification and database state are removed."),
        check_token(ctx, master, 600),
        stage_token(ctx, master),
        Step("forget", "puppet infrastructure forget", master, lambda: infrastructure.forget_replica(ctx, master, forget_cmd),
             commands=[(master, forget_cmd)], destructive=True),
        remove_token(ctx, master),
        Step("purged", "confirm the replica is purged", master, replica_is_purged, commands=[(master, status_cmd)]),
    ])
    if dry_run:
        return procedure.plan()
    finished = procedure.run(lambda _: Outcome("forgotten", next_steps=[
        f"Delete secret key files from {replica} or uninstall PE there (puppet-enterprise-uninstaller -y -p -d).",
        "Provision a new replica to restore high availability."]), approve=approve)
    if not finished.completed:
        return finished.cancelled()  # nothing done
    return {"forgotten": replica, "master_services": len(finished.results["purged"])}
