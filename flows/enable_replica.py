"""Enable a replica — PE guide, "Enable a replica".

1. Back up the classifier hierarchy (enable alters classification): a file and an artifact.
2. ``puppet infrastructure enable replica <replica>`` with every prompt answered by flags; the primary's
   ``puppet`` service is stopped from here until the configuration is deployed (started again after a failure
   too), as around provisioning: a background run would collide with the deploy's own runs.
3. Deploy the configuration: Puppet runs (master, replica, then every managed node) or, for Direct
   Puppet, the orchestrator job ``puppet job run --no-enforce-environment --query 'nodes {…}'`` starts, started
   and followed through the orchestrator's API until every node finished (stopped if pe-ha stops waiting).
4. Remove ``server =`` from the replica's puppet.conf (superseded by ``server_list``).
5. (Optional) the failover drill: cut the master off from the replica and a test node, run the agent
   on the test node (success with no changes expected), and always reconnect.
"""


from typing import Literal

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows import _history as history
from flows._common import log, run_name
from flows._entry import run_context, with_run_context
from flows._lock import installation_lock
from flows._steps import (
    Outcome,
    Procedure,
    Step,
    change_window,
    check_token,
    pause_puppet_service,
    read_facts,
    remove_token,
    stage_token,
)
from pe_ha import commands
from pe_ha.context import RunContext
from pe_ha.forecast import guide_forecast
from pe_ha.validation import Topology
from tasks import agent, classifier, infrastructure, network, orchestrator, puppet_conf

# PE's guide: "the master is unavailable to serve catalog requests" while these run
ENABLE_UNAVAILABLE = ("enable", "deploy")


def _reconnect_after_cancel(flow, flow_run, state) -> None:
    """on_cancellation/on_crashed hook: the drill must never leave the master cut off."""
    params = flow_run.parameters or {}
    if not params.get("drill"):
        return
    with run_context() as ctx:
        s = ctx.settings
        replica = params.get("replica") or (s.replica.name if s.replica else None)
        node = params.get("drill_node") or (s.managed_nodes[0].name if s.managed_nodes else None)
        addresses = [a for a in (s.host(h).address for h in (replica, node) if h) if a and commands.is_ipv4(a)]
        network.reconnect_all(ctx, s.master.name, addresses)


@flow(name="enable-replica", flow_run_name=run_name("enable-replica", "replica", "replica"),
      task_runner=ThreadPoolTaskRunner(max_workers=64),  # type: ignore[arg-type]
      on_cancellation=[_reconnect_after_cancel], on_crashed=[_reconnect_after_cancel])
@with_run_context
@installation_lock("enable-replica")
def enable_replica(ctx: RunContext, replica: str | None = None, topology: Topology = "mono", skip_agent_config: bool = False,
                   agent_server_urls: list[str] | None = None, pcp_brokers: list[str] | None = None,
                   infra_agent_server_urls: list[str] | None = None, infra_pcp_brokers: list[str] | None = None,
                   master_uris: list[str] | None = None, infra_master_uris: list[str] | None = None,
                   classifier_termini: list[str] | None = None, puppetdb_termini: list[str] | None = None,
                   deploy: Literal["agent-runs", "job"] = "agent-runs", drill: bool = False,
                   drill_node: str | None = None,
                   start_at: Literal["backup", "enable", "deploy", "remove-server", "drill"] = "backup",
                   dry_run: bool = False, window_minutes: float | None = None) -> dict:
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
        master_uris: --master-uris: host[:port] entries for agents' pxp-agent master-uris.
        infra_master_uris: --infra-master-uris: the same for infrastructure nodes.
        classifier_termini: --classifier-termini: host[:port] entries (port 4433 by default) for the compilers.
        puppetdb_termini: --puppetdb-termini: host[:port] entries (port 8081 by default) for the compilers.
        deploy: How the new configuration reaches the nodes: agent-runs (puppet agent -t on each) or job (an
            orchestrator job on every active node, followed to each node's end).
        drill: After enabling, cut the master off from the replica and a test node, run the agent there, and always
            reconnect.
        drill_node: The test node for the drill; empty means the first managed node.
        start_at: Step to start from after a manual fix or a crash: backup, enable, deploy, remove-server or drill.
        dry_run: Validate and show the plan (every command and where it runs) without running anything.
        window_minutes: The change window booked for this run, in minutes from its scheduled start (pe-ha run
            --at/--window, or the UI's custom run). At the start the facts are read again; a forecast whose high
            end does not fit what is left of the window starts nothing. A run that will outlive it goes on and
            alerts once.
    """
    window = change_window(window_minutes)
    s = ctx.settings
    master, replica = s.master_and_replica(replica=replica)
    # Building the command validates the flags (mono-with-compile needs URLs or skip_agent_config) up front.
    enable_cmd = commands.enable_replica(replica, topology=topology, token_file=s.remote_token_file,
                                         skip_agent_config=skip_agent_config,
                                         agent_server_urls=agent_server_urls or (), pcp_brokers=pcp_brokers or (),
                                         infra_agent_server_urls=infra_agent_server_urls or (),
                                         infra_pcp_brokers=infra_pcp_brokers or (), master_uris=master_uris or (),
                                         infra_master_uris=infra_master_uris or (),
                                         classifier_termini=classifier_termini or (),
                                         puppetdb_termini=puppetdb_termini or ())
    agent_cmd = commands.agent_run()
    nodes = [n.name for n in s.managed_nodes]
    test_node = s.pick_host(drill_node, default=nodes[0] if nodes else None, what="drill_node") if drill else None
    def backup() -> str:
        return classifier.backup_groups(ctx, str(s.backup_dir))

    def deploy_by_agent_runs() -> None:
        # Infrastructure first, then every managed node in parallel (bounded by the task runner).
        agent.agent_run(ctx, master, agent_cmd)
        agent.agent_run(ctx, replica, agent_cmd)
        codes = agent.agent_runs(ctx, nodes, agent_cmd)
        log().info("deployed to %d managed nodes (exit codes %s)", len(nodes), sorted(set(codes.values())))

    def remove_server() -> bool:
        return puppet_conf.delete_setting(ctx, replica, "server", "main")

    stop_puppet, start_puppet = pause_puppet_service(ctx, master)
    steps = [
        check_token(ctx, master, 1800),
        Step("backup", "back up classifier hierarchy", "worker", backup, phase="backup",
             note=f"GET https://{master}:4433/classifier-api/v1/groups, written to {s.backup_dir} (mode 0600)"),
        stage_token(ctx, master),
        stop_puppet,
        Step("enable", "puppet infrastructure enable replica", master,
             lambda: infrastructure.enable_replica(ctx, master, enable_cmd), commands=[(master, enable_cmd)], phase="enable"),
    ]
    if deploy == "job":
        steps.append(Step("deploy", "deploy configuration (orchestrator job)", master,
                          lambda: orchestrator.run_puppet_everywhere(ctx, master), phase="deploy",
                          note=f"POST https://{master}:8143/orchestrator/v1/command/deploy (every active node, each "
                               "in its own environment, as `puppet job run --no-enforce-environment`), then "
                               "/orchestrator/v1/jobs/<id> every 5 s until it ends; every node must finish"))
    else:
        steps.append(Step("deploy", "deploy configuration (agent-runs)", master, deploy_by_agent_runs, phase="deploy",
                          concurrent=True,
                          commands=[(host, agent_cmd) for host in [master, replica, *nodes]],
                          note="master, then replica, then the managed nodes in parallel"
                          if nodes else ""))
    steps += [
        remove_token(ctx, master),
        start_puppet,
        Step("remove-server", "remove `server =` from the replica's puppet.conf", replica, remove_server,
             commands=[(replica, commands.config_delete("server"))], phase="remove-server"),
    ]
    version, compilers, addresses = read_facts(ctx, "enable-replica", lambda: (
        infrastructure.pe_version(ctx, master),
        infrastructure.compilers(infrastructure.infrastructure_status(ctx, master), (master, replica)),
        [network.resolve(ctx, master, replica), network.resolve(ctx, master, test_node)] if test_node else []))
    infrastructure.require_topology(topology, compilers, status_on=master)
    facts = [f"PE {version} on {master}", infrastructure.compilers_fact(compilers)]
    if drill and test_node:
        facts += [f"{master} reaches {host} at {address}" for host, address in zip((replica, test_node), addresses,
                                                                                  strict=True)]
        steps += drill_steps(ctx, master, test_node, addresses)
    procedure = Procedure(ctx, "enable-replica", replica, steps, topology_on=master, start_at=start_at,
                          phases=("backup", "enable", "deploy", "remove-server", "drill"), facts=facts,
                          forecast=guide_forecast([s.key for s in steps], unavailable_during=ENABLE_UNAVAILABLE),
                          past=history.ratios(ctx, "enable-replica"), window=window)
    if dry_run:
        return procedure.plan()

    def backup_of(done: dict) -> str:
        return done.get("backup", "skipped")  # skipped when the run starts at a later step

    finished = procedure.run(lambda done: Outcome(
        "enabled", notes=[f"classifier backup: {backup_of(done)}", f"server line removed: {done.get('remove-server', False)}"],
        next_steps=["Move any console tuning parameters of the master to Hiera, so both masters get them.",
                    "Run verify-health to confirm replication is active."]))
    done = finished.results
    return {"replica": replica, "backup": backup_of(done), "server_removed": done.get("remove-server", False),
            "drill": done.get("drill-agent-run")}


def drill_steps(ctx: RunContext, master: str, test_node: str, addresses: list[str]) -> list[Step]:
    """The failover drill: cut the master off from ``addresses`` (the replica's and the test node's, as the master
    resolves them), run the agent on the test node (no changes expected), and always reconnect."""
    agent_cmd = commands.agent_run()

    def cut_off() -> None:
        for address in addresses:
            network.isolate(ctx, master, address)

    def run_agent() -> dict:
        code = agent.agent_run(ctx, test_node, agent_cmd, expect_no_changes=True, suffix="-drill")
        log().info("drill passed: %s ran Puppet through the replica with no changes (exit %d)", test_node, code)
        return {"test_node": test_node, "exit_code": code}

    def reconnect() -> None:
        for address in addresses:
            network.reconnect(ctx, master, address)

    return [
        Step("drill-cut-off", "drill: cut the master off", master, cut_off, phase="drill",
             commands=[(master, c) for address in addresses for c in commands.drill_block(address)]),
        Step("drill-agent-run", "drill: puppet agent -t on the test node", test_node, run_agent, phase="drill",
             commands=[(test_node, agent_cmd), (test_node, commands.agent_last_run_summary())]),
        Step("drill-reconnect", "drill: reconnect", master, reconnect, phase="drill", always=True,
             armed_by="drill-cut-off", poll=True,
             commands=[(master, c) for address in addresses for c in commands.drill_unblock(address)],
             note="each rule is deleted until none is left (a rule added twice is deleted twice)"),
    ]
