"""Enable a new replica using a failed master — PE guide, ``puppet infrastructure run enable_ha_failover``.

Runs on the promoted replica (the new master). The whole flow is bounded by
``replication_timeout_secs`` plus a margin: when time runs out the remote command is killed.
"""


from prefect import flow

from flows._common import Runbook, distinct, installation_lock, inventory_host, remove_token_best_effort, run_name, show_topology
from pe_ha import commands, runtime
from pe_ha.validation import Topology, positive_int
from tasks import infrastructure, token


@flow(name="enable-ha-failover", flow_run_name=run_name("enable-ha-failover", "host", "master"))
@installation_lock("enable-ha-failover")
def enable_ha_failover(host: str, topology: Topology = "mono", replication_timeout_secs: int = 1800,
                       caserver: str | None = None, tmpdir: str | None = None, promoted: str | None = None,
                       dry_run: bool = False) -> dict:
    """Turn the failed master ``host`` into the replica of the promoted replica.

    Args:
        host: The failed master, which becomes the new replica.
        topology: mono (no compilers) or mono-with-compile.
        replication_timeout_secs: How long PE may wait for replication; the flow ends on time, even if the remote
            command does not.
        caserver: The CA server, when it is not the promoted master.
        tmpdir: Folder on the promoted master for the plan's temporary files.
        promoted: The promoted replica (now the master) where the plan runs; empty means the inventory's replica.
        dry_run: Validate and show the plan (every command and where it runs) without running anything.
    """
    s = runtime.settings()
    promoted = inventory_host(promoted, default=s.replica.name if s.replica else None, what="promoted replica")
    host = inventory_host(host, default=None, what="host (failed master)")
    distinct(promoted, host, "host")
    replication_timeout_secs = positive_int(replication_timeout_secs, what="replication_timeout_secs", maximum=86400)
    cmd = commands.enable_ha_failover(host, topology=topology, caserver=caserver,
                                      replication_timeout_secs=replication_timeout_secs, tmpdir=tmpdir,
                                      token_file=s.remote_token_file)
    book = Runbook("enable-ha-failover", host)
    book.planned("stage RBAC token", promoted, s.remote_token_file)
    book.planned("enable_ha_failover", promoted, cmd)
    if dry_run:
        return {"dry_run": True, "plan": book.publish_plan()}
    show_topology("before", [promoted])
    with book.step("check RBAC token"):
        token.validate_token(min_validity_s=replication_timeout_secs + s.failover_margin_s, master=promoted)
    try:
        with book.step("stage RBAC token", promoted):
            token.stage_token(promoted)
        with book.step("puppet infrastructure run enable_ha_failover", promoted):
            infrastructure.enable_ha_failover(promoted, host, topology, replication_timeout_secs, caserver, tmpdir,
                                              margin_s=s.failover_margin_s)
    finally:
        remove_token_best_effort(promoted)
    entries = show_topology("after", [promoted])
    book.publish_summary(outcome="failed master is the new replica",
                         next_steps=[f"Point pe-ha at the swapped roles: PEHA_MASTER={promoted}, PEHA_REPLICA={host}."])
    return {"new_replica": host, "master": promoted, "services": len(entries)}
