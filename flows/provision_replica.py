"""Provision a replica — PE guide, "Provision a replica", as a Prefect flow.

1. The replica's puppet.conf ``[main] server`` must be the master.
2. The master runs a PE version pe-ha supports, with Code Manager enabled (the guide's prerequisite).
3. The admin RBAC token must stay valid through the sync.
4. The version's secret key files are copied to the replica (PE 2019.8-2021.5: the orchestrator's
   keys.json; 2021.7 and later: three files), then ``puppet infrastructure provision replica <replica>``.
   (Optional) the manual PuppetDB copy, during the sync, as the guide allows.
5. Wait, bounded, until every replica service is running (PuppetDB no longer ``starting``).
6. ``puppet agent -t --noop --server_list=<replica>`` on a managed node: 0 or 2 passes.
"""


from typing import Literal

from prefect import flow

from flows._common import Runbook, distinct, installation_lock, inventory_host, log, remove_token_best_effort, run_name, show_topology
from pe_ha import commands, runtime
from pe_ha.errors import PreconditionFailed
from pe_ha.validation import timeout_seconds
from tasks import agent, classifier, infrastructure, puppet_conf, status_api, token


@flow(name="provision-replica", flow_run_name=run_name("provision-replica", "replica", "replica"))
@installation_lock("provision-replica")
def provision_replica(replica: str | None = None, copy_puppetdb: bool = False, sync_timeout_s: float = 1800,
                      verify_node: str | None = None, start_at: Literal["provision", "wait", "verify"] = "provision",
                      dry_run: bool = False) -> dict:
    """Provision ``replica`` from the primary master and wait until its services are synced and running.

    ``start_at`` re-runs from a named step after a manual fix or a crash (preconditions always run again;
    completed destructive steps are not repeated).

    Args:
        replica: The replica's certname; empty means the replica from the inventory (PEHA_REPLICA).
        copy_puppetdb: Copy PuppetDB to the replica while it syncs (the guide's optional manual copy, run in
            parallel).
        sync_timeout_s: Longest wait for the replica's services to be synced and running before the flow fails with
            the last status seen.
        verify_node: Managed node for the final puppet agent -t --noop --server_list=<replica>; empty means the first
            managed node.
        start_at: Step to start from after a manual fix or a crash: provision, wait or verify.
        dry_run: Validate and show the plan (every command and where it runs) without running anything.
    """
    order = ["provision", "wait", "verify"]
    first = order.index(start_at)
    s = runtime.settings()
    master = s.master.name
    replica = inventory_host(replica, default=s.replica.name if s.replica else None, what="replica")
    distinct(master, replica, "replica")
    sync_timeout_s = timeout_seconds(sync_timeout_s, what="sync_timeout_s", minimum=1)
    node = inventory_host(verify_node, default=s.managed_nodes[0].name if s.managed_nodes else None, what="verify_node")
    book = Runbook("provision-replica", replica)
    book.planned("check replica's server setting", replica, commands.config_print("server"))
    book.planned("check PE version", master, commands.pe_version())
    book.planned("check Code Manager is enabled", master, "status API on 8140 (else the classifier)")
    book.planned("stage RBAC token (sftp, mode 0600)", master, s.remote_token_file)
    book.planned("copy the version's secret key files", master, "scp -p of each file the PE version lists")
    book.planned("provision", master, commands.provision_replica(replica, token_file=s.remote_token_file))
    if copy_puppetdb:
        book.planned("copy PuppetDB during sync", master, "subflow copy_puppetdb (see its own plan)")
    book.planned("wait for sync (bounded)", master, commands.infrastructure_status(host=replica))
    book.planned("verify from a managed node", node, commands.agent_run(noop=True, server_list=[replica]))
    if dry_run:
        return {"dry_run": True, "plan": book.publish_plan()}

    show_topology("before", [master])
    with book.step("check replica puppet.conf [main] server", replica):
        server = puppet_conf.read_setting(replica, "server", "main")
        if server != master:
            raise PreconditionFailed(
                f"{replica}'s puppet.conf [main] server is {server or 'unset'!r}, not the master {master}",
                hint=f"on {replica}, set `server = {master}` in the [main] section of /etc/puppetlabs/puppet/puppet.conf")
    with book.step("check PE version", master):
        version = infrastructure.pe_version(master)
    with book.step("check Code Manager is enabled", master):
        running = status_api.code_manager_running(master)
        if not running and not classifier.code_manager_auto_configure(master):
            raise PreconditionFailed(
                f"Code Manager is not enabled on {master} (its status on 8140 "
                f"{'is not running' if running is False else 'could not be read'}, and the PE Master group does not "
                "set code_manager_auto_configure)",
                hint="enable Code Manager before provisioning a replica, as PE's HA guide requires")
    with book.step("check RBAC token lifetime"):
        token.validate_token(min_validity_s=sync_timeout_s + 600, master=master)
    try:
        with book.step("stage RBAC token", master):
            token.stage_token(master)
        if first <= order.index("provision"):
            with book.step(f"copy PE {version}'s secret key files to the replica", master):
                infrastructure.copy_secret_keys(master, replica, version)
            with book.step("puppet infrastructure provision replica", master):
                infrastructure.provision_replica(master, replica)
        else:
            book.skip("puppet infrastructure provision replica", f"start_at={start_at}")
        if copy_puppetdb and first <= order.index("provision"):
            from flows.copy_puppetdb import copy_puppetdb as copy_flow

            with book.step("manual PuppetDB copy (during sync)", replica):
                copy_flow(source=master, target=replica, approve=True)
        with book.step("wait until replica services are operational", replica):
            # Also when starting at "verify": the verification is only meaningful on a synced replica.
            entries = infrastructure.wait_for_replica_operational(master, replica, sync_timeout_s)
    finally:
        remove_token_best_effort(master)
    with book.step("verify: noop run against the replica", node):
        code = agent.agent_run(node, noop=True, server_list=[replica], suffix="-noop")
    show_topology("after", [master])
    log().info("replica %s provisioned: %s; verification run exited %d", replica, infrastructure.summarize(entries), code)
    book.publish_summary(outcome="provisioned", next_steps=[
        f"Enable the replica: run the enable-replica deployment for {replica} (back up classification first; it does).",
    ])
    return {"replica": replica, "services": len(entries), "verify_exit_code": code}
