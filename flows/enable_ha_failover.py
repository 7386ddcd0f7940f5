"""Enable a new replica using a failed master — PE guide, ``puppet infrastructure run enable_ha_failover``.

Runs the plan ``enterprise_tasks::enable_ha_failover`` on the promoted replica (the new master), with the plan's
own parameters, then removes ``server =`` from the new replica's puppet.conf, as the guide's enable step does. From
PE 2019.3 the plan authenticates with the primary's certificate, so no RBAC token is staged.
``replication_timeout_secs`` is the plan's bound on its replica status wait only; the whole plan (services,
certificates, Puppet runs, provision, enable) is bounded by ``plan_timeout_s``, after which the remote command is
killed.
"""


from prefect import flow

from flows._common import run_name
from flows._entry import with_run_context
from flows._lock import installation_lock
from flows._steps import Outcome, Procedure, Step, read_facts
from pe_ha import commands
from pe_ha.context import RunContext
from pe_ha.errors import ValidationError
from pe_ha.settings import distinct
from pe_ha.validation import Topology, positive_int
from tasks import infrastructure, network, puppet_conf


@flow(name="enable-ha-failover", flow_run_name=run_name("enable-ha-failover", "host", "master"))
@with_run_context
@installation_lock("enable-ha-failover")
def enable_ha_failover(ctx: RunContext, host: str, topology: Topology = "mono", replication_timeout_secs: int = 1800,
                       skip_agent_config: bool = False, agent_server_urls: list[str] | None = None,
                       pcp_brokers: list[str] | None = None, plan_timeout_s: int = 10800,
                       caserver: str | None = None, tmpdir: str | None = None, promoted: str | None = None,
                       dry_run: bool = False) -> dict:
    """Turn the failed master ``host`` into the replica of the promoted replica.

    Args:
        host: The failed master, which becomes the new replica.
        topology: mono (no compilers) or mono-with-compile.
        replication_timeout_secs: The plan's bound on waiting for the new replica's services to sync (PE's default 1800).
        skip_agent_config: Leave agents' server_list and pcp_broker_list alone (the plan's skip_agent_config).
        agent_server_urls: host:port of each server agents use, in order (required for mono-with-compile unless
            skip_agent_config).
        pcp_brokers: host:port of each PCP broker agents use, in order (as agent_server_urls).
        plan_timeout_s: Hard bound for the whole plan, in seconds; the remote command is killed after it. It must
            exceed replication_timeout_secs: the plan also re-runs Puppet, signs certificates and enables the replica.
        caserver: The CA server, when it is not the promoted master.
        tmpdir: Folder on the promoted master for the plan's temporary files.
        promoted: The promoted replica (now the master) where the plan runs; empty means the inventory's replica.
        dry_run: Validate and show the plan (every command and where it runs) without running anything.
    """
    s = ctx.settings
    promoted = s.pick_host(promoted, default=s.replica.name if s.replica else None, what="promoted replica")
    host = s.pick_host(host, default=None, what="host (failed master)")
    distinct(promoted, host, "host")
    replication_timeout_secs = positive_int(replication_timeout_secs, what="replication_timeout_secs", maximum=86400)
    plan_timeout_s = positive_int(plan_timeout_s, what="plan_timeout_s", maximum=7 * 86400)
    if plan_timeout_s <= replication_timeout_secs:
        raise ValidationError(f"plan_timeout_s={plan_timeout_s} must exceed replication_timeout_secs="
                              f"{replication_timeout_secs}: the plan does more than wait for replication")
    cmd = commands.enable_ha_failover(host, topology=topology, caserver=caserver,
                                      replication_timeout_secs=replication_timeout_secs, tmpdir=tmpdir,
                                      skip_agent_config=skip_agent_config, agent_server_urls=agent_server_urls or (),
                                      pcp_brokers=pcp_brokers or ())
    version, compilers = read_facts(ctx, "enable-ha-failover", lambda: (
        infrastructure.pe_version(ctx, promoted),
        infrastructure.compilers(infrastructure.infrastructure_status(ctx, promoted), (promoted, host))))
    infrastructure.require_topology(topology, compilers, status_on=promoted)
    facts = [f"PE {version} on {promoted}", infrastructure.compilers_fact(compilers)]
    procedure = Procedure(ctx, "enable-ha-failover", host, topology_on=promoted, facts=facts, steps=[
        # The plan works on the failed master over ssh.
        Step("ssh", "check ssh to the failed master", promoted, lambda: network.require_ssh(ctx, promoted, host),
             commands=[(promoted, commands.ssh_check(host))]),
        Step("enable-ha-failover", "puppet infrastructure run enable_ha_failover", promoted,
             lambda: infrastructure.enable_ha_failover(ctx, promoted, cmd, plan_timeout_s), commands=[(promoted, cmd)],
             note=f"killed on the host after plan_timeout_s={plan_timeout_s} s"),
        # The plan enables the new replica, so the guide's enable step applies to it: server_list supersedes server.
        Step("remove-server", "remove `server =` from the new replica's puppet.conf", host,
             lambda: puppet_conf.delete_setting(ctx, host, "server", "main"),
             commands=[(host, commands.config_delete("server"))]),
    ])
    if dry_run:
        return procedure.plan()
    done = procedure.run(lambda _: Outcome("failed master is the new replica", next_steps=[
        f"Point pe-ha at the swapped roles: PEHA_MASTER={promoted}, PEHA_REPLICA={host}."]))
    return {"new_replica": host, "master": promoted, "services": len(done.results["topology-after"]),
            "server_removed": done.results["remove-server"]}
