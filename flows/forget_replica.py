"""Forget a replica — PE guide, "Forget a replica". Only when the replica is permanently offline.

1. Refuse while the replica still answers on any PE port (from the worker).
2. Approval pause (unless approved up front).
3. ``puppet infrastructure forget <replica>`` on the master.
4. Show that the replica is purged: ``puppet infrastructure status`` no longer lists it.
"""


from prefect import flow
from prefect.states import Cancelled

from flows._common import (
    Runbook,
    distinct,
    installation_lock,
    inventory_host,
    remove_token_best_effort,
    require_approval,
    run_name,
    show_topology,
)
from pe_ha import commands, runtime
from pe_ha.errors import ApprovalRejected, PreconditionFailed
from tasks import infrastructure, status_api, token


@flow(name="forget-replica", flow_run_name=run_name("forget-replica", "replica", "replica"))
@installation_lock("forget-replica")
def forget_replica(replica: str | None = None, master: str | None = None, approve: bool = False, dry_run: bool = False):
    """Decommission ``replica``: classification and database state are cleaned up on the master.

    Args:
        replica: The replica's certname; empty means the replica from the inventory (PEHA_REPLICA).
        master: The master to run on; empty means the inventory's master.
        approve: Give the approval up front; otherwise the run pauses before the destructive step and waits for an
            operator.
        dry_run: Validate and show the plan (every command and where it runs) without running anything.
    """
    s = runtime.settings()
    master = inventory_host(master, default=s.master.name, what="master")
    replica = inventory_host(replica, default=s.replica.name if s.replica else None, what="replica")
    distinct(master, replica, "replica")
    book = Runbook("forget-replica", replica)
    book.planned("offline check", "worker", f"TCP probe of {replica} on PE ports")
    book.planned("forget", master, commands.forget_replica(replica, token_file=s.remote_token_file))
    book.planned("show result", master, commands.infrastructure_status())
    if dry_run:
        return {"dry_run": True, "plan": book.publish_plan()}
    show_topology("before", [master])
    with book.step("is the replica permanently offline?", replica):
        answering = status_api.open_ports_from_worker(replica)
        if answering:
            raise PreconditionFailed(f"{replica} still answers on PE ports {answering}",
                                     hint="forget only a replica that is permanently offline; shut it down first")
    try:
        require_approval(book, f"Forget {replica} on {master}: its classification and database state are removed.",
                         approved_up_front=approve)
    except ApprovalRejected as exc:
        book.publish_summary(outcome="not approved")
        return Cancelled(message=f"forget-replica ended with nothing done: {exc.message}")
    with book.step("check RBAC token"):
        token.validate_token(min_validity_s=600, master=master)
    try:
        with book.step("stage RBAC token", master):
            token.stage_token(master)
        with book.step("puppet infrastructure forget", master):
            infrastructure.forget_replica(master, replica)
    finally:
        remove_token_best_effort(master)
    with book.step("confirm the replica is purged", master):
        entries = infrastructure.infrastructure_status(master)
        still = [e for e in entries if e.get("server") == replica]
        if still:
            raise PreconditionFailed(f"{replica} is still listed by puppet infrastructure status after forget")
    show_topology("after", [master])
    book.publish_summary(outcome="forgotten", next_steps=[
        f"Delete secret key files from {replica} or uninstall PE there (puppet-enterprise-uninstaller -y -p -d).",
        "Provision a new replica to restore high availability."])
    return {"forgotten": replica, "master_services": len(entries)}
