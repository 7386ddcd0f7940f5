"""Promote a replica — PE guide, "Promote a replica". Only when the master is offline for good.

1. Preconditions: the replica runs a supported PE version. Split-brain guard: the master must answer on
   none of PE's ports, asked from the replica and from the worker (``allow_master_reachable=True``
   overrides it, loudly). The replica was enabled (classification, read from its own classifier).
2. Approval pause (unless approved up front).
3. ``puppet infrastructure promote replica`` on the replica.
4. Redeploy the agents' configuration (Puppet runs through the new master, or a Direct Puppet job).
5. List what still points at the old master, with the fix for each (reads only): classifier groups, agents'
   ``server_list``, the old master's node in PuppetDB (PE's step 3, and peadm's ``puppet node purge``).
"""


from typing import Literal

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows._common import log, run_name
from flows._entry import with_run_context
from flows._lock import installation_lock
from flows._steps import Outcome, Procedure, Step, read_facts
from pe_ha import commands, leftovers
from pe_ha.context import RunContext
from pe_ha.errors import ApiError, PreconditionFailed, RemoteError, ValidationError
from pe_ha.validation import Topology, positive_int
from tasks import agent, classifier, infrastructure, orchestrator, puppet_conf, puppetdb, status_api


def still_pointing_at(ctx: RunContext, old: str, new: str, nodes: list[str]) -> list[leftovers.Leftover]:
    """What still names the old master after a promotion (reads only): ``new``'s classifier groups, each
    agent's ``server_list``, and ``old`` as an active node in ``new``'s PuppetDB."""
    found = leftovers.in_classifier(classifier.groups_on(ctx, new), old, new)
    server_lists: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    for node in nodes:
        try:
            server_lists[node] = puppet_conf.read_setting(ctx, node, "server_list", section="agent")
        except RemoteError as exc:  # an agent that is down now is listed, not fatal: the promotion is done
            unreadable[node] = exc.message
    found += leftovers.in_agents(server_lists, unreadable, old, new)
    found += leftovers.in_puppetdb(puppetdb.node_active(ctx, new, old), old, new)
    for item in found:
        log().warning("still points at %s: %s", old, item.line())
    if not found:
        log().info("nothing read points at the old master %s", old)
    return found


@flow(name="promote-replica", flow_run_name=run_name("promote-replica", "replica", "replica"),
      task_runner=ThreadPoolTaskRunner(max_workers=64))  # type: ignore[arg-type]
@with_run_context
@installation_lock("promote-replica")
def promote_replica(ctx: RunContext, replica: str | None = None, topology: Topology = "mono", promote_timeout_s: int = 4 * 3600,
                    deploy: Literal["agent-runs", "job"] = "agent-runs", approve: bool = False,
                    allow_master_reachable: bool = False, dry_run: bool = False):
    """Promote ``replica`` to primary master after the old master is gone for good.

    Args:
        replica: The replica's certname; empty means the replica from the inventory (PEHA_REPLICA).
        topology: The --topology of the promotion, always passed: mono, or mono-with-compile where compilers serve
            agents.
        promote_timeout_s: Longest the promotion may take before the command is stopped. PE: "Promotion can take up
            to the amount of time it took to install PE initially", so the default is generous (4 h).
        deploy: How the new configuration reaches the nodes: agent-runs (puppet agent -t on each) or job (puppet job
            run).
        approve: Give the approval up front; otherwise the run pauses before the destructive step and waits for an
            operator.
        allow_master_reachable: Promote even though the old master still answers (split-brain risk; only when it is
            truly being retired).
        dry_run: Validate and show the plan (every command and where it runs) without running anything.
    """
    s = ctx.settings
    master, replica = s.master_and_replica(replica=replica)
    nodes = [n.name for n in s.managed_nodes]
    promote_cmd = commands.promote_replica(topology=topology)
    promote_timeout_s = positive_int(promote_timeout_s, what="promote_timeout_s", maximum=24 * 3600)
    if promote_timeout_s < 600:
        raise ValidationError(f"promote_timeout_s={promote_timeout_s} is shorter than any promotion (at least 600 s)",
                              hint="promotion can take as long as PE's installation took; keep the default")
    agent_cmd = commands.agent_run(server_list=[replica])
    probe_cmd = commands.tcp_probe_ports(master, status_api.PE_PORTS)

    def split_brain_guard() -> None:
        from_worker = status_api.open_ports_from_worker(ctx, master)
        from_replica = status_api.open_ports_from_host(ctx, replica, probe_cmd)
        if from_worker or from_replica:
            reason = (f"the master {master} still answers on PE ports {sorted(set(from_worker) | set(from_replica))} "
                      f"(from the worker: {from_worker or 'none'}; from {replica}: {from_replica or 'none'})")
            if not allow_master_reachable:
                raise PreconditionFailed(reason, hint="promote only when the master is permanently offline; shut it "
                                                      "down (or fence it) first, or run forget/reinitialize instead")
            log().error("SPLIT-BRAIN GUARD OVERRIDDEN by allow_master_reachable=True: %s. Agents may talk to two "
                        "masters.", reason)

    def replica_was_enabled() -> None:
        try:
            enabled = classifier.replica_enabled(ctx, replica, read_from=replica)
        except ApiError as exc:
            raise PreconditionFailed(f"cannot confirm that {replica} was enabled as a replica: its classifier "
                                     f"did not answer ({exc.message})",
                                     hint=f"check that {replica}'s console services run (puppet infrastructure "
                                          "status on the replica)") from None
        if not enabled:
            raise PreconditionFailed(f"{replica} was never enabled as a replica (it is not in ha_enabled_replicas of "
                                     "the classification it holds); promoting it would leave agents without a master",
                                     hint="a provisioned replica must be enabled (enable-replica) before it can be "
                                          "promoted; if the master is gone, restore it from backup instead")

    def redeploy_by_agent_runs() -> list[int]:
        codes = list(agent.agent_runs(ctx, nodes, agent_cmd).values())
        log().info("redeployed to %d nodes (exit codes %s)", len(nodes), sorted(set(codes)))
        return codes

    def compilers_seen() -> list[str] | None:
        try:
            return infrastructure.compilers(infrastructure.read_status(ctx, replica), (master, replica))
        except RemoteError as exc:
            # Promotion is the way out when the master is gone; a status that cannot list the compilers then
            # must not block it. The operator's topology stands, and the plan says it was not checked.
            log().warning("compilers not read on %s: %s", replica, exc)
            return None

    version, compilers = read_facts(ctx, "promote-replica", lambda: (infrastructure.pe_version(ctx, replica),
                                                                     compilers_seen()), approve=approve)
    if compilers is not None:
        infrastructure.require_topology(topology, compilers, status_on=replica)
    steps = [
        Step("split-brain-guard", "split-brain guard: is the old master gone?", master, split_brain_guard,
             commands=[(replica, probe_cmd)],
             note=f"and from the worker: a TCP probe of {master} on PE ports {list(status_api.PE_PORTS)}"),
        Step("replica-enabled", "check the replica was enabled", replica, replica_was_enabled,
             note="classifier on the replica: PE Infrastructure's ha_enabled_replicas"),
        Step("approval", "operator approval", "operator", lambda: None,
             approval=f"Promote {replica} to primary master; the old master {master} is decommissioned."),
        Step("promote", "puppet infrastructure promote replica", replica,
             lambda: infrastructure.promote_replica(ctx, replica, promote_cmd, promote_timeout_s),
             commands=[(replica, promote_cmd)], destructive=True, note=f"stopped after {promote_timeout_s} s"),
    ]
    if deploy == "job":
        steps.append(Step("redeploy", "redeploy configuration (orchestrator job)", replica,
                          lambda: orchestrator.run_puppet_everywhere(ctx, replica),
                          note=f"POST https://{replica}:8143/orchestrator/v1/command/deploy, followed through "
                               "/orchestrator/v1/jobs/<id> until every node finished"))
    else:
        steps.append(Step("redeploy", "redeploy configuration (agent-runs)", "managed nodes", redeploy_by_agent_runs,
                          commands=[(host, agent_cmd) for host in nodes], concurrent=True))
    steps.append(Step("leftovers", "list what still points at the old master (reads only)", replica,
                      lambda: still_pointing_at(ctx, master, replica, nodes),
                      commands=[(host, commands.config_print("server_list", section="agent")) for host in nodes],
                      note=f"and the classifier's groups on {replica}, and {master} as a node in {replica}'s PuppetDB"))
    procedure = Procedure(ctx, "promote-replica", replica, steps, topology_on=replica,
                          facts=[f"PE {version} on {replica}",
                                 infrastructure.compilers_fact(compilers)])
    if dry_run:
        return procedure.plan()

    finished = procedure.run(lambda done: Outcome("promoted", next_steps=[
        *[f"Still points at {master}: {item.line()}" for item in done.get("leftovers") or []],
        f"Update everything else that refers to {master}: PE client tools (puppet-access, puppet job), Code Manager "
        "webhooks, Razor brokers, and CNAME/DNS records (pe-ha cannot read these).",
        f"Point pe-ha at the new topology: PEHA_MASTER={replica}.",
        f"Make {master} a replica again with enable-ha-failover; if it is gone for good, purge it on {replica} "
        f"(puppet node purge {master}).",
    ]), approve=approve)
    if not finished.completed:
        return finished.cancelled()  # nothing promoted
    return {"promoted": replica, "old_master": master,
            "still_points_at_old_master": [item.line() for item in finished.results.get("leftovers") or []]}
