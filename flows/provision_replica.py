"""Provision a replica — PE guide, "Provision a replica", as a Prefect flow.

1. The replica's puppet.conf ``[main] server`` must be the master.
2. The master runs a PE version pe-ha supports, with Code Manager enabled (the guide's prerequisite).
3. The admin RBAC token must stay valid through the sync. PE's other prerequisites: one replica at a time,
   Code Manager's r10k_private_key in pe.conf (not only in the console), no tuning parameters in the console.
   The classifier hierarchy is backed up (PE 2019.7 and later name this backup a prerequisite of provisioning,
   which already changes classification).
4. The version's secret key files are copied to the replica (none in the 2019.5 guide; 2019.7-2021.5: the
   orchestrator's keys.json; 2021.7 and later: three files), then ``puppet infrastructure provision replica <replica>``.
   (Optional, PE 2019.5 and earlier) the manual PuppetDB copy, during the sync, as the guide allows; PE
   2019.7 and later document no such copy, so there it is refused before anything changes.
   The primary's ``puppet`` service is stopped from here until the sync is done (and started again after a
   failure too), as peadm does: a background run would collide with provisioning's own Puppet runs.
5. Wait, bounded, until every replica service is running (PuppetDB no longer ``starting``).
6. ``puppet agent -t --noop --server_list=<replica>`` on a managed node succeeds and shows no changed resources:
   its ``last_run_summary.yaml`` counts nothing out of sync (a noop run exits 0 with changes pending).
"""


from typing import Literal

from prefect import flow

from flows import _history as history
from flows._common import log, run_name
from flows._entry import with_run_context
from flows._lock import installation_lock
from flows._steps import Outcome, Procedure, Step, change_window, check_token, pause_puppet_service, read_facts, remove_token, stage_token
from pe_ha import commands
from pe_ha.context import RunContext
from pe_ha.errors import PreconditionFailed
from pe_ha.forecast import guide_forecast
from pe_ha.validation import timeout_seconds
from tasks import agent, classifier, infrastructure, puppet_conf, status_api

# PE's guide: "the master is unavailable to serve catalog requests" while these run
PROVISION_UNAVAILABLE = ("provision", "copy-puppetdb", "wait")


@flow(name="provision-replica", flow_run_name=run_name("provision-replica", "replica", "replica"))
@with_run_context
@installation_lock("provision-replica")
def provision_replica(ctx: RunContext, replica: str | None = None, copy_puppetdb: bool = False, sync_timeout_s: float = 1800,
                      verify_node: str | None = None, start_at: Literal["provision", "wait", "verify"] = "provision",
                      dry_run: bool = False, window_minutes: float | None = None) -> dict:
    """Provision ``replica`` from the primary master and wait until its services are synced and running.

    ``start_at`` re-runs from a named step after a manual fix or a crash (preconditions always run again;
    completed destructive steps are not repeated).

    Args:
        replica: The replica's certname; empty means the replica from the inventory (PEHA_REPLICA).
        copy_puppetdb: Copy PuppetDB to the replica while it syncs (the guide's optional manual copy, run in
            parallel). PE documents it up to 2019.5 only; on later versions it is refused.
        sync_timeout_s: Longest wait for the replica's services to be synced and running before the flow fails with
            the last status seen.
        verify_node: Managed node for the final puppet agent -t --noop --server_list=<replica>; empty means the first
            managed node.
        start_at: Step to start from after a manual fix or a crash: provision, wait or verify.
        dry_run: Validate and show the plan (every command and where it runs) without running anything.
        window_minutes: The change window booked for this run, in minutes from its scheduled start (pe-ha run
            --at/--window, or the UI's custom run). At the start the facts are read again; a forecast whose high
            end does not fit what is left of the window starts nothing. A run that will outlive it goes on and
            alerts once.
    """
    window = change_window(window_minutes)
    s = ctx.settings
    master, replica = s.master_and_replica(replica=replica)
    sync_timeout_s = timeout_seconds(sync_timeout_s, what="sync_timeout_s", minimum=1)
    node = s.pick_host(verify_node, default=s.managed_nodes[0].name if s.managed_nodes else None, what="verify_node")
    provision_cmd = commands.provision_replica(replica, token_file=s.remote_token_file)
    verify_cmd = commands.agent_run(noop=True, server_list=[replica])

    def replica_points_at_master() -> None:
        server = puppet_conf.read_setting(ctx, replica, "server", "main")
        if server != master:
            raise PreconditionFailed(
                f"{replica}'s puppet.conf [main] server is {server or 'unset'!r}, not the master {master}",
                hint=f"on {replica}, set `server = {master}` in the [main] section of /etc/puppetlabs/puppet/puppet.conf")

    def code_manager_enabled() -> None:
        running = status_api.code_manager_running(ctx, master)
        if not running and not classifier.code_manager_auto_configure(ctx, master):
            raise PreconditionFailed(
                f"Code Manager is not enabled on {master} (its status on 8140 "
                f"{'is not running' if running is False else 'could not be read'}, and the PE Master group does not "
                "set code_manager_auto_configure)",
                hint="enable Code Manager before provisioning a replica, as PE's HA guide requires")

    def copy_during_sync() -> None:
        from flows.copy_puppetdb import copy_puppetdb as copy_flow

        copy_flow(source=master, target=replica, approve=True)

    def wait_for_sync(expected_s: float) -> list[dict]:
        return infrastructure.wait_for_replica_operational(ctx, master, replica, sync_timeout_s, expected_s=expected_s)

    def verify() -> int:
        return agent.agent_run(ctx, node, verify_cmd, expect_no_changes=True, suffix="-noop")

    version, present, groups, key_in_pe_conf = read_facts(ctx, "provision-replica", lambda: (
        (v := infrastructure.pe_version(ctx, master)), infrastructure.replica_files_present(ctx, master, v),
        classifier.groups_on(ctx, master), infrastructure.r10k_key_in_pe_conf(ctx, master)))
    enabled = classifier.replicas_enabled_in(groups)
    # PE's own prerequisites of provisioning, checked before anything changes
    others = [r for r in enabled if r != replica]
    if others:
        raise PreconditionFailed(
            f"PE on {master} already has the replica {', '.join(others)}: PE runs one replica at a time",
            hint=f"forget {others[0]} first (the forget-replica procedure), then provision {replica}")
    key = classifier.console_r10k_private_key(groups)
    if key and not key_in_pe_conf:
        raise PreconditionFailed(
            f"Code Manager's r10k_private_key ({key}) is set in the console (PE Master) but not in {master}'s pe.conf",
            hint="add \"puppet_enterprise::profile::master::r10k_private_key\": \"<path>\" to "
                 "/etc/puppetlabs/enterprise/conf.d/pe.conf, as PE's DR prerequisites require")
    tuning = classifier.console_tuning(groups)
    if tuning:
        raise PreconditionFailed(
            "tuning parameters are set in the console, where the replica will not get them: " + "; ".join(tuning),
            hint="move them to Hiera (for example data/common.yaml in your control repo) and remove them from the "
                 "console before provisioning, as PE's DR prerequisites require")
    if copy_puppetdb and not version.documents_manual_copy:
        raise PreconditionFailed(
            f"PE {version} documents no manual PuppetDB copy during provisioning: the guide's \"Manually copy "
            "PuppetDB to speed replication\" ends with PE 2019.5, and from 2019.7 provisioning syncs PuppetDB itself",
            hint="provision without copy_puppetdb; to reseed the replica's pe-puppetdb later, run copy-puppetdb on "
                 "its own")
    files_plan = infrastructure.replica_file_plan(master, replica, version, present)
    facts = [f"PE {version} on {master}", f"enabled replicas: {', '.join(enabled) or 'none'}",
             f"{master} has " + ", ".join(f"{path}: {'yes' if there else 'no'}" for path, there in present.items())]
    status_cmd = commands.infrastructure_status(host=replica)
    stop_puppet, start_puppet = pause_puppet_service(ctx, master)
    steps = [
        Step("server-setting", "check replica puppet.conf [main] server", replica, replica_points_at_master,
             commands=[(replica, commands.config_print("server"))]),
        Step("code-manager", "check Code Manager is enabled", master, code_manager_enabled,
             note=f"GET https://{master}:8140/status/v1/services (else the classifier's code_manager_auto_configure)"),
        check_token(ctx, master, sync_timeout_s + 600),
        Step("backup", "back up classifier hierarchy (provisioning changes classification)", "worker",
             lambda: classifier.backup_groups(ctx, str(s.backup_dir)), phase="provision",
             note=f"GET https://{master}:4433/classifier-api/v1/groups, written to {s.backup_dir} (mode 0600)"),
        stage_token(ctx, master),
        stop_puppet,
        Step("replica-files", "copy the secret keys, hiera.yaml and ad_ca_chain.pem to the replica", master,
             lambda: infrastructure.copy_replica_files(ctx, replica, files_plan), phase="provision", commands=files_plan,
             note="the secret keys PE lists for its version (2019.8-2021.5: keys.json; 2021.7 and later: three), "
                  "then hiera.yaml and ad_ca_chain.pem where the master has them; each: folder 0755, scp -p, 0644"),
        Step("provision", "puppet infrastructure provision replica", master,
             lambda: infrastructure.provision_replica(ctx, master, provision_cmd), commands=[(master, provision_cmd)],
             phase="provision"),
    ]
    if copy_puppetdb:
        steps.append(Step("copy-puppetdb", "manual PuppetDB copy (during sync)", replica, copy_during_sync,
                          phase="provision", subflow="copy-puppetdb",
                          note="subflow copy-puppetdb: it reads its facts once the replica's database exists, and "
                               "plans from them (its dry run shows its steps)"))
    steps += [
        # Also when starting at "verify": the verification is only meaningful on a synced replica.
        Step("wait", "wait until replica services are operational", replica, wait_for_sync,
             commands=[(master, status_cmd)], poll=True, timed=True,
             note=f"repeated every 5 s until every service runs, for at most {sync_timeout_s:g} s"),
        remove_token(ctx, master),
        start_puppet,
        Step("verify", "verify: noop run against the replica, no changed resources", node, verify,
             commands=[(node, verify_cmd), (node, commands.agent_last_run_summary())]),
    ]
    procedure = Procedure(ctx, "provision-replica", replica, steps, phases=("provision", "wait", "verify"), start_at=start_at,
                          topology_on=master, facts=facts,
                          forecast=guide_forecast([s.key for s in steps], unavailable_during=PROVISION_UNAVAILABLE),
                          past=history.ratios(ctx, "provision-replica"), window=window)
    if dry_run:
        return procedure.plan()

    finished = procedure.run(lambda _: Outcome("provisioned", next_steps=[
        f"Enable the replica: run the enable-replica deployment for {replica} (back up classification first; it does).",
    ]))
    entries, code = finished.results["wait"], finished.results["verify"]
    log().info("replica %s provisioned: %s; verification run exited %d", replica, infrastructure.summarize(entries), code)
    return {"replica": replica, "services": len(entries), "verify_exit_code": code}
