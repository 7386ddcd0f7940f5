"""pe-ha lab simulator (not PE): `puppet infrastructure` subcommands, simulated: status, provision, enable, promote, forget, reinitialize and run (enable_ha_failover)."""

import json
import os
import subprocess
import sys
import time

from base import (
    GROUPS,
    PDB_SCHEMA,
    PE_DATABASES,
    STATE,
    SimError,
    StateLock,
    _read_json,
    _write_json,
    certname,
    conf_delete,
    conf_set,
    confirm,
    flag,
    https,
    known_host,
    log,
    my_address,
    option,
    options,
    pe_profile,
    psql,
    slow_fault,
    ssh,
    state,
    update_state,
)
from classifier import groups_by_name, replicate_console, set_agent_params, upsert_group
from puppetdb import deactivate_sql, pdb_has_schema
from rbac import PLAN_CERT_AUTH, require_token
from services import ensure_role_services, stop_service
from status import host_entries, infra_status


def cmd_status(args):
    entries = infra_status(option(args, "--host"))
    if option(args, "--format") == "json":
        print(json.dumps(entries, indent=2))
        return 0
    # The text names each server's role (peadm's documentation/status.md); the JSON's `type` is the service's kind.
    roles = {state()["master"]: "Primary Master", state().get("replica"): "Primary Master Replica"}
    for e in entries:
        print("%s: %s on %s, %s" % (e["display_name"], e["state"].capitalize(), roles.get(e["server"], e["server"]),
                                    e["url"]))
        if e["service"] == "puppetdb-status" and e["status"]:
            last = e["status"].get("sync_status", {}).get("last_successful_sync_time")
            if last:
                print("  Info: Last sync successfully completed (at %s)" % last)
        if flag(args, "--verbose"):
            for a in e["alerts"]:
                print("  %s: %s" % (a["severity"].capitalize(), a["message"]))
    ok = sum(1 for e in entries if e["state"] == "running")
    print(time.strftime("%Y-%m-%d %H:%M:%S %z"))
    print("%d of %d services are fully operational." % (ok, len(entries)))
    return 0


def replica_on_master(args, sub, usage_tail=""):
    """What `provision replica` and `enable replica` check first: the replica argument, a run on the primary
    master, then the token (after the slow fault, where PE would start working)."""
    if args[:1] != ["replica"] or len(args) < 2:
        raise SimError("Usage: puppet infrastructure %s replica <REPLICA NODE NAME>%s" % (sub, usage_tail))
    s = state()
    if s.get("role") != "master":
        raise SimError("Error: %s replica must be run on the primary master." % sub)
    slow_fault(sub)
    require_token(args)
    return args[1], s


def cmd_provision(args):
    replica, s = replica_on_master(args, "provision")
    known_host(replica)
    if replica == s["master"]:
        raise SimError("Error: The replica cannot be the primary master itself.")
    if s.get("replica") and s["replica"] != replica:
        raise SimError("Error: %s is already provisioned as a replica; only one replica is supported. "
                       "Run `puppet infrastructure forget %s` first." % (s["replica"], s["replica"]))
    r = ssh(replica, "/opt/puppetlabs/bin/puppet config print server --section main", timeout=30)
    if r.returncode:
        raise SimError("Error: Could not connect to %s: %s" % (replica, r.stderr.decode().strip()))
    server = r.stdout.decode().strip()
    if server != s["master"]:
        raise SimError("Error: %s must use the primary master as its Puppet Server: its puppet.conf [main] server is "
                       "'%s', expected '%s'." % (replica, server, s["master"]))
    print("Notice: Pinning %s to PE Infrastructure Agent" % replica)
    print("Notice: Running puppet on %s." % replica)
    log("provision replica %s" % replica)
    update_state(replica=replica, replica_enabled=False)
    groups = groups_by_name()
    if "PE HA Replica" not in groups:
        upsert_group({"name": "PE HA Replica", "parent": groups["PE Infrastructure"]["id"],
                      "rule": ["or", ["=", "name", replica]],
                      "classes": {"puppet_enterprise::profile::database": {"replication_mode": "replica"},
                                  "puppet_enterprise::profile::console": {"replication_mode": "replica"}}}, None)
    replicate_console()
    r = ssh(replica, "/opt/puppetlabs/bin/pe-sim provision-target %s %s" % (s["master"], s.get("sync_seconds", 6)),
            timeout=120)
    sys.stdout.write(r.stdout.decode())
    if r.returncode:
        raise SimError("Error: Puppet failed on one or more nodes: %s" % r.stderr.decode().strip())
    print("Notice: A replica has been provisioned for %s. Services are now syncing from the primary master; "
          "check progress with `puppet infrastructure status --verbose`." % s["master"])
    return 0


def admin_provision_target(args):
    master, sync_seconds = args[0], float(args[1])
    if not pdb_has_schema():
        r = subprocess.run(["runuser", "-u", "postgres", "--", "/opt/puppetlabs/server/bin/psql", "-X", "-q",
                            "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql", "-d", "pe-puppetdb",
                            "-c", 'SET ROLE "pe-puppetdb"', "-f", PDB_SCHEMA], capture_output=True, text=True)
        if r.returncode:
            raise SimError("PuppetDB schema migration failed: %s" % r.stderr)
    update_state(role="replica", master=master, replica=certname(), provisioned=True, enabled=False,
                 puppetdb_sync_until=time.time() + sync_seconds)
    ensure_role_services()
    print("Notice: %s services installed; PuppetDB initial sync started (simulated: %gs)" % (certname(), sync_seconds))
    return 0


def cmd_enable(args):
    replica, s = replica_on_master(args, "enable", " [options]")
    if s.get("replica") != replica:
        raise SimError("Error: %s is not a provisioned replica. Run `puppet infrastructure provision replica %s` first."
                       % (replica, replica))
    topology = option(args, "--topology")
    if topology is None:
        confirm([], "Which topology does this installation use (mono / mono-with-compile)?")
    if topology not in ("mono", "mono-with-compile"):
        raise SimError("Error: --topology must be mono or mono-with-compile, not %r" % topology)
    skip = flag(args, "--skip-agent-config")
    agent_urls = [u for v in options(args, "--agent-server-urls") for u in v.split(",") if u]
    pcp = [u for v in options(args, "--pcp-brokers") for u in v.split(",") if u]
    infra_urls = [u for v in options(args, "--infra-agent-server-urls") for u in v.split(",") if u]
    infra_pcp = [u for v in options(args, "--infra-pcp-brokers") for u in v.split(",") if u]
    if topology == "mono-with-compile" and not skip and not (agent_urls and pcp):
        raise SimError("Error: agent_server_urls and pcp_brokers are required parameters for the 'mono-with-compile' "
                       "topology, unless skip_agent_config is set to true")
    try:
        _, st = https("GET", replica, 8081, "/status/v1/simple", timeout=3)
    except OSError:
        st = "unreachable"
    if st != "running":
        raise SimError("Error: Received a PCP error message (blocking request for 'status query'): replica PuppetDB is "
                       "%s. Check `puppet infrastructure status --verbose`, then retry." % st)
    confirm(args, "Enable %s as a replica of %s with topology %s?" % (replica, s["master"], topology))
    log("enable replica %s (topology %s)" % (replica, topology))
    groups = groups_by_name()
    master = s["master"]
    if "PE HA Master" not in groups:
        upsert_group({"name": "PE HA Master", "parent": groups["PE Master"]["id"], "rule": ["or", ["=", "name", master]],
                      "classes": {"puppet_enterprise::profile::master": {"replication_mode": "source"}}}, None)
    upsert_group({"classes": {"puppet_enterprise": {"ha_enabled_replicas": [replica]}}}, groups["PE Infrastructure"]["id"])
    if not skip:
        if topology == "mono":
            agent_urls = agent_urls or ["%s:8140" % master, "%s:8140" % replica]
            pcp = pcp or ["%s:8142" % master, "%s:8142" % replica]
        set_agent_params("PE Agent", agent_urls, pcp)
        set_agent_params("PE Infrastructure Agent", infra_urls or ["%s:8140" % master, "%s:8140" % replica],
                         infra_pcp or ["%s:8142" % master, "%s:8142" % replica])
        print("Notice: Agents will be configured with server_list %s" % ",".join(agent_urls))
    else:
        print("Notice: Skipping agent configuration (--skip-agent-config)")
    update_state(replica_enabled=True, topology=topology, skip_agent_config=skip)
    r = ssh(replica, "/opt/puppetlabs/bin/pe-sim mark-enabled", timeout=30)
    if r.returncode:
        raise SimError("Error: could not finish enabling on %s: %s" % (replica, r.stderr.decode().strip()))
    print("Notice: Replica %s enabled. Deploy the configuration: run Puppet on all nodes, or with Direct Puppet run "
          "`puppet job run --no-enforce-environment --query 'nodes {deactivated is null and expired is null}'`."
          % replica)
    return 0


def cmd_promote(args):
    if args[:1] != ["replica"]:
        raise SimError("Usage: puppet infrastructure promote replica")
    s = state()
    if s.get("role") != "replica" or not s.get("provisioned"):
        raise SimError("Error: promote replica must be run on a provisioned replica; this node is %s." % s.get("role"))
    confirm(args, "Promote %s to primary master? The old master %s must be permanently offline." % (certname(), s["master"]))
    slow_fault("promote")
    me, old = certname(), s["master"]
    log("promote replica %s" % me)
    print("Notice: Promoting %s; the old master %s is decommissioned." % (me, old))
    with StateLock():
        st = state()
        st.update(role="master", master=me, replica=None, provisioned=False, enabled=False, promoted_from=old,
                  replica_enabled=False, puppetdb_sync_until=0)
        _write_json(STATE, st)
    ensure_role_services()
    groups = [g for g in _read_json(GROUPS, []) if g["name"] not in ("PE HA Master", "PE HA Replica")]
    for g in groups:
        if g["name"].startswith("PE ") and g.get("rule") == ["or", ["=", "name", old]]:  # PE's own groups only
            g["rule"] = ["or", ["=", "name", me]]
        agent = g["classes"].get("puppet_enterprise::profile::agent")
        if agent and agent.get("server_list"):
            agent["server_list"] = ["%s:8140" % me]
            agent["pcp_broker_list"] = ["%s:8142" % me]
        pe = g["classes"].get("puppet_enterprise")
        if pe:
            pe["ha_enabled_replicas"] = []
            pe["puppet_master_host"] = me
    _write_json(GROUPS, groups, 0o600)
    conf_delete("server_list")
    conf_set("server", me)
    print("Notice: Promotion complete. Update client tools, Code Manager hooks and CNAMEs that point at %s, "
          "then run Puppet on all nodes." % old)
    return 0


def cmd_forget(args):
    if not args:
        raise SimError("Usage: puppet infrastructure forget <REPLICA NODE NAME>")
    replica = args[0]
    s = state()
    if s.get("role") != "master":
        raise SimError("Error: forget must be run on the primary master.")
    require_token(args)
    if replica == s["master"]:
        raise SimError("Error: refusing to forget the primary master itself.")
    slow_fault("forget")
    groups = [g for g in _read_json(GROUPS, []) if g["name"] not in ("PE HA Replica", "PE HA Master")]
    for g in groups:
        agent = g["classes"].get("puppet_enterprise::profile::agent")
        if agent and agent.get("server_list"):
            agent["server_list"] = [u for u in agent["server_list"] if not u.startswith(replica)]
            agent["pcp_broker_list"] = [u for u in agent.get("pcp_broker_list", []) if not u.startswith(replica)]
        pe = g["classes"].get("puppet_enterprise")
        if pe and replica in pe.get("ha_enabled_replicas", []):
            pe["ha_enabled_replicas"] = [x for x in pe["ha_enabled_replicas"] if x != replica]
    _write_json(GROUPS, groups, 0o600)
    update_state(replica=None, replica_enabled=False)
    try:
        psql(deactivate_sql(replica.replace("'", "")))
    except SimError as e:
        log("purge of %s from PuppetDB failed: %s" % (replica, e))
    print("Notice: %s has been decommissioned and purged as an agent; a Puppet run completed on %s." % (replica, s["master"]))
    return 0


def cmd_reinitialize(args):
    if args[:1] != ["replica"]:
        raise SimError("Usage: puppet infrastructure reinitialize replica [--db DATABASE]")
    accepted = pe_profile().get("reinitialize_databases") or list(PE_DATABASES)
    dbs = options(args, "--db") or list(PE_DATABASES)
    for db in dbs:  # option values are checked when the command line is parsed, before anything else
        if db not in accepted:
            raise SimError("Error: --db must be one of %s, not %r" % (", ".join(accepted), db))
    s = state()
    if s.get("role") != "replica" or not s.get("provisioned"):
        raise SimError("Error: reinitialize replica must be run on a provisioned replica.")
    master = s["master"]
    try:
        code, _ = https("GET", master, 4433, "/status/v1/services", timeout=3)
    except OSError as e:
        raise SimError("Error: the primary master %s is not reachable (%s); it must be fully functional." % (master, e))
    if code != 200:
        raise SimError("Error: the primary master %s is not fully functional (status %d)." % (master, code))
    confirm(args, "Reinitialize %s on this replica? They are destroyed and re-created." % ", ".join(dbs))
    slow_fault("reinitialize")
    for db in dbs:
        as_pg = ["runuser", "-u", "postgres", "--", "/opt/puppetlabs/server/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                 "-h", "/run/postgresql", "-d", "postgres"]
        r = subprocess.run(as_pg + ["-c", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'" % db,
                                    "-c", 'DROP DATABASE IF EXISTS "%s"' % db], capture_output=True, text=True)
        r2 = subprocess.run(as_pg + ["-c", 'CREATE DATABASE "%s" OWNER "%s"' % (db, db)], capture_output=True, text=True)
        if r.returncode or r2.returncode:
            raise SimError("Error: reinitializing %s failed: %s%s" % (db, r.stderr, r2.stderr))
        dump = subprocess.run(["/opt/puppetlabs/server/bin/pg_dump", "-h", master, "-U", db, "-d", db, "--no-owner"],
                              capture_output=True, text=True, env=dict(os.environ, PGPASSFILE="/root/.pgpass",
                                                                       PGCONNECT_TIMEOUT="3"))
        if dump.returncode:
            raise SimError("Error: copying %s from %s failed: %s" % (db, master, dump.stderr.strip()))
        load = subprocess.run(["/opt/puppetlabs/server/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", my_address(),
                               "-U", db, "-d", db], input=dump.stdout, capture_output=True, text=True,
                              env=dict(os.environ, PGPASSFILE="/root/.pgpass"))
        if load.returncode:
            raise SimError("Error: loading %s failed: %s" % (db, load.stderr.strip()))
        print("Notice: Reinitialized %s from %s" % (db, master))
    return 0


def cmd_run(args):
    if args[:1] != ["enable_ha_failover"]:
        raise SimError("Error: unknown plan %r (this simulator knows enable_ha_failover)" % (args[:1] or [""])[0])
    params = dict(a.split("=", 1) for a in args[1:] if "=" in a)
    host = params.get("host")
    topology = params.get("topology")
    if not host or topology not in ("mono", "mono-with-compile"):
        raise SimError("Error: enable_ha_failover needs host=<failed master> and topology=mono|mono-with-compile")
    timeout = float(params.get("replication_timeout_secs", 1800))
    skip = params.get("skip_agent_config") == "true"
    agent_urls, pcp = params.get("agent_server_urls"), params.get("pcp_brokers")
    # The plan's own first check (enterprise_tasks::enable_ha_failover, both public copies)
    if topology == "mono-with-compile" and not skip and not (agent_urls and pcp):
        raise SimError("Error: agent_server_urls and pcp_brokers are required parameters for the 'mono-with-compile' "
                       "topology unless skip_agent_config is true")
    s = state()
    if s.get("role") != "master":
        raise SimError("Error: run enable_ha_failover on the promoted replica (the current master).")
    if host == s["master"]:
        raise SimError("Error: host must be the failed master, not this node.")
    known_host(host)
    started = time.time()
    print("Starting: plan enterprise_tasks::enable_ha_failover")
    slow_fault("enable_ha_failover")
    r = ssh(host, "/opt/puppetlabs/bin/pe-sim become-agent %s" % s["master"], timeout=60)
    if r.returncode:
        raise SimError("Error: could not prepare %s: %s" % (host, r.stderr.decode().strip()))
    print("Finished: disable_all_puppet_services, remove_enterprise_conf_files, delete_ssl_dir on %s" % host)
    PLAN_CERT_AUTH["on"] = True
    cmd_provision(["replica", host])
    deadline = started + timeout
    while True:
        entries = host_entries(host, "replica")
        ok = sum(1 for e in entries if e["state"] == "running")
        print("%d of %d services are fully operational." % (ok, len(entries)))
        if ok == len(entries) and ok:
            break
        if time.time() >= deadline:
            raise SimError("Error: puppetlabs.hafailover/provision-replica-failed: Replica status check timed out "
                           "after %gs" % timeout)
        time.sleep(min(2.0, max(0.1, deadline - time.time())))
    enable = ["replica", host, "--topology", topology, "--yes"]
    if skip:
        enable.append("--skip-agent-config")
    if agent_urls:
        enable += ["--agent-server-urls", agent_urls]
    if pcp:
        enable += ["--pcp-brokers", pcp]
    cmd_enable(enable)
    print("Finished: plan enterprise_tasks::enable_ha_failover in %.1f sec" % (time.time() - started))
    return 0


def admin_become_agent(args):
    new_master = args[0]
    for name in ("pe-orchestration-services", "pe-console-services", "pe-puppetdb", "pe-puppetserver"):
        stop_service(name)
    with StateLock():
        st = state()
        st.update(role="agent", master=new_master, replica=None, provisioned=False, enabled=False, replica_enabled=False,
                  puppetdb_sync_until=0)
        _write_json(STATE, st)
    conf_delete("server_list")
    conf_set("server", new_master)
    print("Notice: %s now points at %s" % (certname(), new_master))
    return 0


INFRA = {"status": cmd_status, "provision": cmd_provision, "enable": cmd_enable, "promote": cmd_promote,
         "forget": cmd_forget, "reinitialize": cmd_reinitialize, "run": cmd_run}
