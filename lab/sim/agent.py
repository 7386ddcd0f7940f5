"""pe-ha lab simulator (not PE): `puppet agent`, `puppet resource service` and `puppet config`, simulated."""

import hashlib
import os
import subprocess
import time

from base import (
    LASTRUNFILE,
    LOCKFILE,
    ROLE_SERVICES,
    SERVICES,
    SimError,
    conf_delete,
    conf_get,
    conf_set,
    fault_active,
    faults,
    flag,
    https,
    option,
    role,
    slow_fault,
    trusted_facts,
)
from services import service_running, start_service, stop_service


def cmd_resource(args):
    if args[:1] != ["service"] or len(args) < 2:
        raise SimError("Error: this simulator models `puppet resource service <name> [ensure=running|stopped]`")
    name = args[1]
    known = set(SERVICES) | {"puppet", "pe-postgresql", "pxp-agent"}
    if name not in known or (name in SERVICES and name not in ROLE_SERVICES.get(role(), ())
                             and not service_running(name)):
        if name not in known:
            raise SimError("Error: Could not find service %s" % name)
    ensure = next((a.split("=", 1)[1] for a in args[2:] if a.startswith("ensure=")), None)
    before = "running" if service_running(name) else "stopped"
    if ensure == "running" and before != "running":
        if name == "pxp-agent":
            pass
        else:
            start_service(name)
        print("Notice: /Service[%s]/ensure: ensure changed 'stopped' to 'running'" % name)
    elif ensure == "stopped" and before != "stopped":
        if name != "pxp-agent":
            stop_service(name)
        print("Notice: /Service[%s]/ensure: ensure changed 'running' to 'stopped'" % name)
    elif ensure not in (None, "running", "stopped"):
        raise SimError("Error: Parameter ensure failed on Service[%s]: Invalid value %r" % (name, ensure))
    now = "running" if service_running(name) else "stopped"
    print("service { '%s':\n  ensure   => '%s',\n  provider => 'systemd',\n}" % (name, now))
    return 0


def lock_holder():
    try:
        pid = int(open(LOCKFILE).read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


# On the lab's real-Puppet profile the agent hosts run Debian's real agent (lab/realserver.py), with PE's paths.
REAL_AGENT = "/opt/puppetlabs/sim/real-agent"
REAL_AGENT_ARGS = [
    "--confdir", "/etc/puppetlabs/puppet", "--vardir", "/opt/puppetlabs/puppet/cache",
    "--publicdir", "/opt/puppetlabs/puppet/public", "--logdir", "/var/log/puppetlabs/puppet",
    "--rundir", "/var/run/puppetlabs", "--codedir", "/etc/puppetlabs/code", "--ssldir", "/etc/puppetlabs/puppet/ssl",
    # The lab's CA publishes no CRL; a dropped packet fails over in seconds, not Puppet's 2 min.
    "--certificate_revocation", "false", "--http_connect_timeout", "5s", "--color", "false",
]


def cmd_agent(args):
    if os.path.exists(REAL_AGENT):
        os.execv("/usr/bin/puppet", ["puppet", "agent", *REAL_AGENT_ARGS, *args])
    if not flag(args, "-t", "--test", "--onetime"):
        raise SimError("Error: this simulator models `puppet agent -t`")
    noop = flag(args, "--noop")
    slow_fault("agent")
    if lock_holder() or fault_active("agent_lock"):
        print("Notice: Run of Puppet configuration client already in progress; skipping  (%s exists)" % LOCKFILE)
        return 1
    os.makedirs(os.path.dirname(LOCKFILE), exist_ok=True)
    with open(LOCKFILE, "w") as f:
        f.write(str(os.getpid()))
    try:
        return _agent_run(args, noop)
    finally:
        try:
            os.unlink(LOCKFILE)
        except OSError:
            pass


def _catalog_resources(catalog):
    """Each resource the simulated catalog manages: (resource/property, current, desired, (current, desired) as
    the event shows them, apply, the applied event's text)."""
    for key, value in sorted(catalog.get("settings", {}).items()):
        current = conf_get(key, "main")
        yield ("Pe_ini_setting[%s]/value" % key, current, value, (current, value),
               lambda key=key, value=value: conf_set(key, value, "main"),
               "value changed '%s' to '%s'" % (current, value))
    for path, content in sorted(catalog.get("files", {}).items()):
        current = open(path).read() if os.path.exists(path) else None
        # Puppet's File content events name the checksums ({sha256} by default in Puppet 7)
        was, will = ("{sha256}%s" % hashlib.sha256(c.encode()).hexdigest() for c in (current or "", content))
        yield ("File[%s]/content" % path, current, content, (was, will),
               lambda path=path, content=content: _write_file(path, content),
               "content changed '%s' to '%s'" % (was, will) if current is not None
               else "defined content as '%s'" % will)


def _write_file(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(content)


def _agent_run(args, noop):
    override = option(args, "--server_list")
    listing = override or conf_get("server_list", "agent") or conf_get("server", "agent") or ""
    servers = []
    for item in listing.split(","):
        item = item.strip()
        if item:
            host, _, port = item.partition(":")
            servers.append((host, int(port or 8140)))
    if not servers:
        print("Error: Could not run: no server or server_list is configured")
        return 1
    connect_timeout = float(faults().get("agent_connect_timeout", 3))
    chosen = None
    for host, port in servers:
        try:
            code, body = https("GET", host, port, "/status/v1/simple/master", timeout=connect_timeout)
            if code == 200:
                chosen = (host, port)
                break
            print("Debug: %s:%d answered %s (%s)" % (host, port, code, body))
        except OSError as e:
            print("Debug: Unable to connect to server from server_list setting: %s:%d (%s)" % (host, port, e))
    if chosen is None:
        print("Error: Could not run Puppet configuration client: Could not select a functional puppet master from "
              "server_list: '%s'" % listing)
        return 1
    print("Info: Using configured server_list entry %s:%d" % chosen)
    facts = trusted_facts()
    try:
        code, catalog = https("POST", chosen[0], chosen[1], "/sim/v1/catalog",
                              {"trusted": facts, "facts": node_facts()}, timeout=30)
    except OSError as e:
        print("Error: Could not retrieve catalog from remote server: %s" % e)
        return 1
    if code != 200:
        print("Error: Could not retrieve catalog from remote server: Error %s on SERVER: %s"
              % (code, catalog.get("msg", catalog) if isinstance(catalog, dict) else catalog))
        return 1
    config_version = int(time.time())
    print("Info: Applying configuration version '%d' (compiled by %s)" % (config_version, catalog.get("compiled_by")))
    changes = 0
    pending = 0
    for resource, current, desired, shown, apply, changed in _catalog_resources(catalog):
        if current == desired:
            continue
        event = "Notice: /Stage[main]/Puppet_enterprise::Profile::Agent/%s: " % resource
        if noop:
            pending += 1
            print(event + "current_value '%s', should be '%s' (noop)" % shown)
        else:
            apply()
            print(event + changed)
            changes += 1
    failed = fault_active("agent_fail")
    if failed:
        print("Error: /Stage[main]/App/Exec[simulated-failure]/returns: change from 'notrun' to ['0'] failed")
    status = "failed" if failed else ("changed" if changes else "unchanged")
    try:
        https("POST", chosen[0], 8081, "/pdb/cmd/v1", {"certname": facts["certname"], "status": status, "noop": noop},
              timeout=10)
    except OSError as e:
        print("Warning: Unable to submit report to PuppetDB: %s" % e)
    print("Notice: Applied catalog in 0.%02d seconds" % (changes + 3))
    write_summary(config_version, total=len(catalog.get("settings", {})) + len(catalog.get("files", {})) + 8, changed=changes,
                  out_of_sync=changes + pending, failed=1 if failed else 0, noop=pending)
    if failed:
        return 6 if changes else 4
    return 2 if changes else 0


def write_summary(config_version, *, total, changed, out_of_sync, failed, noop):
    """``last_run_summary.yaml`` in the layout Puppet 7.23.0 writes (a real capture:
    tests/contract/samples/agent-last-run-summary-noop-pending.yaml)."""
    os.makedirs(os.path.dirname(LASTRUNFILE), exist_ok=True)
    now = int(time.time())
    with open(LASTRUNFILE + ".tmp", "w") as f:
        f.write("---\nversion:\n  config: %d\n  puppet: 7.23.0\napplication:\n  run_mode: agent\n"
                "  initial_environment: production\n  converged_environment: production\n"
                "resources:\n  changed: %d\n  corrective_change: 0\n  failed: %d\n  failed_to_restart: 0\n"
                "  out_of_sync: %d\n  restarted: 0\n  scheduled: 0\n  skipped: 0\n  total: %d\n"
                "time:\n  total: 0.05\n  last_run: %d\nchanges:\n  total: %d\n"
                "events:\n  failure: %d\n  noop: %d\n  success: %d\n  total: %d\n"
                % (config_version, changed, failed, out_of_sync, total, now, changed, failed, noop, changed,
                   failed + noop + changed))
    os.replace(LASTRUNFILE + ".tmp", LASTRUNFILE)


def node_facts():
    """The facts the simulator's classifier rules may read. ``pe_server_version``: PE's fact, present where PE's
    server packages are (``/opt/puppetlabs/server/pe_version``), absent on agents."""
    try:
        with open("/opt/puppetlabs/server/pe_version") as f:
            return {"pe_server_version": f.read().strip()}
    except OSError:
        return {}


def cmd_agent_subprocess():
    return subprocess.run(["/opt/puppetlabs/bin/puppet", "agent", "-t"], capture_output=True).returncode


# Puppet's own defaults for the settings pe-ha reads but PE does not write into puppet.conf.
SETTING_DEFAULTS = {"lastrunfile": LASTRUNFILE}


def cmd_config(args):
    if not args:
        raise SimError("Usage: puppet config print|set|delete ...")
    section = option(args, "--section", "main")
    rest = [a for i, a in enumerate(args) if a != "--section" and (i == 0 or args[i - 1] != "--section")]
    action, rest = rest[0], rest[1:]
    if action == "print":
        print(conf_get(rest[0], section) or SETTING_DEFAULTS.get(rest[0], ""))
        return 0
    if action == "set":
        conf_set(rest[0], rest[1], section)
        return 0
    if action == "delete":
        old = conf_get(rest[0], section)
        if conf_delete(rest[0], section):
            print("Deleted setting from '%s': '%s = %s'" % (section, rest[0], old))
        else:
            print("Warning: No setting found in configuration file for section '%s' setting name '%s'" % (section, rest[0]))
        return 0
    raise SimError("Error: unknown config action %r" % action)
