"""Enable a replica — PE guide, "Enable a replica".

1. Back up the classifier hierarchy (enable alters classification): a file and an artifact.
2. ``puppet infrastructure enable replica <replica>`` with every prompt answered by flags.
3. Deploy the configuration: Puppet runs (master, replica, then every managed node) or, for Direct
   Puppet, ``puppet job run --no-enforce-environment --query 'nodes {…}'``.
4. Remove ``server =`` from the replica's puppet.conf (superseded by ``server_list``).
5. (Optional) the failover drill: cut the master off from the replica and a test node, run the agent
   on the test node (success with no changes expected), and always reconnect.
"""


from typing import Literal

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows._common import Runbook, distinct, installation_lock, inventory_host, log, remove_token_best_effort, run_name, show_topology
from pe_ha import commands, runtime
from pe_ha.validation import Topology
from tasks import agent, classifier, infrastructure, network, puppet_conf, token


def _reconnect_after_cancel(flow, flow_run, state) -> None:
    """on_cancellation/on_crashed hook: the drill must never leave the master cut off."""
    params = flow_run.parameters or {}
    if not params.get("drill"):
        return
    s = runtime.settings()
    replica = params.get("replica") or (s.replica.name if s.replica else None)
    node = params.get("drill_node") or (s.managed_nodes[0].name if s.managed_nodes else None)
    addresses = [a for a in (s.host(h).address for h in (replica, node) if h) if a and commands.is_ipv4(a)]
    network.reconnect_all(s.master.name, addresses)


@flow(name="enable-replica", flow_run_name=run_name("enable-replica", "replica", "replica"),
      task_runner=ThreadPoolTaskRunner(max_workers=64),  # type: ignore[arg-type]
      on_cancellation=[_reconnect_after_cancel], on_crashed=[_reconnect_after_cancel])
@installation_lock("enable-replica")
def enable_replica(replica: str | None = None, topology: Topology = "mono", skip_agent_config: bool = False,
                   agent_server_urls: list[str] | None = None, pcp_brokers: list[str] | None = None,
                   infra_agent_server_urls: list[str] | None = None, infra_pcp_brokers: list[str] | None = None,
                   deploy: Literal["agent-runs", "job"] = "agent-runs", drill: bool = False,
                   drill_node: str | None = None,
                   start_at: Literal["backup", "enable", "deploy", "remove-server", "drill"] = "backup",
                   dry_run: bool = False) -> dict:
    """Enable ``replica`` for failover and deploy the new agent configuration.

    ``start_at`` re-runs from a named step after a manual fix or a crash; earlier steps are not repeated.

    Args:
        replica: The replica's certname; empty means the replica from the inventory (PEHA_REPLICA).
        topology: mono (no compilers) or mono-with-compile; mono-with-compile needs skip_agent_config or the URL
            lists.
        skip_agent_config: Leave agents' server_list and pcp_broker_list alone (--skip-agent-config), e.g. when load
            balancers are configured.
        agent_server_urls: --agent-server-urls: host[:port] entries for agents, in order.
        pcp_brokers: --pcp-brokers: host[:port] entries for agents, in order.
        infra_agent_server_urls: --infra-agent-server-urls: host[:port] entries for infrastructure nodes.
        infra_pcp_brokers: --infra-pcp-brokers: host[:port] entries for infrastructure nodes.
        deploy: How the new configuration reaches the nodes: agent-runs (puppet agent -t on each) or job (puppet job
            run).
        drill: After enabling, cut the master off from the replica and a test node, run the agent there, and always
            reconnect.
        drill_node: The test node for the drill; empty means the first managed node.
        start_at: Step to start from after a manual fix or a crash: backup, enable, deploy, remove-server or drill.
        dry_run: Validate and show the plan (every command and where it runs) without running anything.
    """
    order = ["backup", "enable", "deploy", "remove-server", "drill"]
    first = order.index(start_at)

    def wanted(step: str) -> bool:
        return first <= order.index(step)
    s = runtime.settings()
    master = s.master.name
    replica = inventory_host(replica, default=s.replica.name if s.replica else None, what="replica")
    distinct(master, replica, "replica")
    # Building the command validates the flags (mono-with-compile needs URLs or skip_agent_config) up front.
    enable_cmd = commands.enable_replica(replica, topology=topology, token_file=s.remote_token_file,
                                         skip_agent_config=skip_agent_config,
                                         agent_server_urls=agent_server_urls or (), pcp_brokers=pcp_brokers or (),
                                         infra_agent_server_urls=infra_agent_server_urls or (),
                                         infra_pcp_brokers=infra_pcp_brokers or ())
    nodes = [n.name for n in s.managed_nodes]
    test_node = inventory_host(drill_node, default=nodes[0] if nodes else None, what="drill_node") if drill else None
    book = Runbook("enable-replica", replica)
    book.planned("back up classifier", "worker", "GET /classifier-api/v1/groups")
    book.planned("enable", master, enable_cmd)
    if deploy == "job":
        book.planned("deploy (Direct Puppet)", master, commands.job_run_all_nodes(token_file=s.remote_token_file))
    else:
        for host in [master, replica, *nodes]:
            book.planned("deploy (Puppet run)", host, commands.agent_run())
    book.planned("remove server setting", replica, commands.config_delete("server"))
    if drill and test_node:
        book.planned("drill: cut off", master, "iptables DROP to/from the replica and the test node")
        book.planned("drill: agent run", test_node, commands.agent_run())
        book.planned("drill: reconnect", master, "iptables -D (always)")
    if dry_run:
        return {"dry_run": True, "plan": book.publish_plan()}

    show_topology("before", [master])
    with book.step("check RBAC token"):
        token.validate_token(min_validity_s=1800, master=master)
    backup = "skipped"
    if wanted("backup"):
        with book.step("back up classifier hierarchy"):
            backup = classifier.backup_groups(str(s.backup_dir))
    else:
        book.skip("back up classifier hierarchy", f"start_at={start_at}")
    try:
        with book.step("stage RBAC token", master):
            token.stage_token(master)
        if wanted("enable"):
            with book.step("puppet infrastructure enable replica", master):
                infrastructure.enable_replica(master, replica, topology, skip_agent_config, agent_server_urls or (),
                                              pcp_brokers or (), infra_agent_server_urls or (), infra_pcp_brokers or ())
        else:
            book.skip("puppet infrastructure enable replica", f"start_at={start_at}")
        if not wanted("deploy"):
            book.skip("deploy configuration", f"start_at={start_at}")
        elif deploy == "job":
            with book.step("deploy configuration (job)"):
                agent.job_run_all_nodes(master)
        else:
            with book.step("deploy configuration (agent-runs)"):
                # Infrastructure first, then every managed node in parallel (bounded by the task runner).
                agent.agent_run(master)
                agent.agent_run(replica)
                codes = agent.agent_runs(nodes)
                log().info("deployed to %d managed nodes (exit codes %s)", len(nodes), sorted(set(codes.values())))
    finally:
        remove_token_best_effort(master)
    removed = False
    if wanted("remove-server"):
        with book.step("remove `server =` from the replica's puppet.conf", replica):
            removed = puppet_conf.delete_setting(replica, "server", "main")
    drill_result = None
    if drill and test_node:
        drill_result = failover_drill(book, master, replica, test_node)
    else:
        book.skip("failover drill", "not requested")
    show_topology("after", [master])
    book.publish_summary(outcome="enabled", notes=[f"classifier backup: {backup}",
                                                   f"server line removed: {removed}"],
                         next_steps=["Move any console tuning parameters of the master to Hiera, so both masters get them.",
                                     "Run verify-health to confirm replication is active."])
    return {"replica": replica, "backup": backup, "server_removed": removed, "drill": drill_result}


def failover_drill(book: Runbook, master: str, replica: str, test_node: str) -> dict:
    """Cut the master off from the replica and the test node, run the agent there, and always reconnect."""
    addresses = [network.resolve(master, replica), network.resolve(master, test_node)]
    try:
        with book.step("drill: cut the master off", master):
            for address in addresses:
                network.isolate(master, address)
        with book.step("drill: puppet agent -t on the test node", test_node):
            code = agent.agent_run(test_node, expect_no_changes=True, suffix="-drill")
    finally:
        with book.step("drill: reconnect", master):
            for address in addresses:
                network.reconnect(master, address)
    log().info("drill passed: %s ran Puppet through the replica with no changes (exit %d)", test_node, code)
    return {"test_node": test_node, "exit_code": code}
