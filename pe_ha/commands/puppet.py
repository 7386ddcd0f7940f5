"""`puppet infrastructure`, `puppet agent`, `puppet job`, `puppet resource` and `puppet config`."""

from __future__ import annotations

from collections.abc import Sequence

from pe_ha import validation as v
from pe_ha.commands._base import (
    CLASSIFIER_PORT,
    PCP_PORT,
    PE_CURL,
    PUPPET,
    PUPPET_PORT,
    PUPPETDB_LOOPBACK,
    PUPPETDB_PORT,
    Command,
)
from pe_ha.errors import ValidationError


def _infra(*args: str) -> list[str]:
    return [PUPPET, "infrastructure", *args]


def provision_replica(replica: str, *, token_file: str) -> Command:
    """``puppet infrastructure provision replica <replica>`` (on the master, admin token required)."""
    replica = v.hostname(replica, what="replica")
    argv = _infra("provision", "replica", replica, "--color", "false",
                  "--token-file", v.absolute_path(token_file, what="token file"))
    return Command(tuple(argv), f"provision replica {replica}")


def enable_replica(
    replica: str,
    *,
    topology: str,
    token_file: str,
    skip_agent_config: bool = False,
    agent_server_urls: Sequence[str] = (),
    pcp_brokers: Sequence[str] = (),
    infra_agent_server_urls: Sequence[str] = (),
    infra_pcp_brokers: Sequence[str] = (),
    master_uris: Sequence[str] = (),
    infra_master_uris: Sequence[str] = (),
    classifier_termini: Sequence[str] = (),
    puppetdb_termini: Sequence[str] = (),
) -> Command:
    """``puppet infrastructure enable replica <replica> --topology … --yes`` with every prompt answered.

    The URL lists are passed as given (host[:port], comma-joined): ``--agent-server-urls``/``--pcp-brokers``
    configure the PE Agent group, the ``--infra-*`` ones the PE Infrastructure Agent group, ``--master-uris`` the
    agents' pxp ``master-uris``, ``--classifier-termini`` and ``--puppetdb-termini`` the compilers' termini
    (flag names from enterprise_tasks, peadm and pe_ha_failover; pe-facts.md 1c).

    ``mono-with-compile`` needs either ``skip_agent_config`` or both URL lists, as PE requires.
    """
    replica = v.hostname(replica, what="replica")
    topology = v.topology(topology)
    argv = _infra("enable", "replica", replica, "--topology", topology)
    if skip_agent_config:
        if agent_server_urls or pcp_brokers:
            raise ValidationError(
                "skip_agent_config conflicts with agent_server_urls/pcp_brokers",
                hint="either let PE configure agents (give the URL lists) or skip it (give neither)",
            )
        argv.append("--skip-agent-config")
    elif topology == "mono-with-compile":
        if not agent_server_urls or not pcp_brokers:
            raise ValidationError(
                "topology mono-with-compile needs agent_server_urls and pcp_brokers, or skip_agent_config",
                hint="list your compile masters or load balancer (host:8140 and host:8142), "
                "or pass skip_agent_config=True and configure agents per site",
            )
    if agent_server_urls:
        argv += ["--agent-server-urls", ",".join(
            v.server_urls(agent_server_urls, what="agent server URL", default_port=PUPPET_PORT))]
    if pcp_brokers:
        argv += ["--pcp-brokers", ",".join(v.server_urls(pcp_brokers, what="PCP broker", default_port=PCP_PORT))]
    if infra_agent_server_urls:
        argv += ["--infra-agent-server-urls", ",".join(
            v.server_urls(infra_agent_server_urls, what="infra agent server URL", default_port=PUPPET_PORT))]
    if infra_pcp_brokers:
        argv += ["--infra-pcp-brokers", ",".join(
            v.server_urls(infra_pcp_brokers, what="infra PCP broker", default_port=PCP_PORT))]
    for flag, urls, what, port in (("--master-uris", master_uris, "master URI", PUPPET_PORT),
                                   ("--infra-master-uris", infra_master_uris, "infra master URI", PUPPET_PORT),
                                   ("--classifier-termini", classifier_termini, "classifier terminus", CLASSIFIER_PORT),
                                   ("--puppetdb-termini", puppetdb_termini, "PuppetDB terminus", PUPPETDB_PORT)):
        if urls:
            argv += [flag, ",".join(v.server_urls(urls, what=what, default_port=port))]
    argv += ["--yes", "--color", "false", "--token-file", v.absolute_path(token_file, what="token file")]
    return Command(tuple(argv), f"enable replica {replica} ({topology})")


def promote_replica(*, topology: str) -> Command:
    """``puppet infrastructure promote replica --topology <t> --yes`` (on the replica; no token required). The
    topology is always given: without it the command decides or asks, and pe-ha answers no prompt."""
    argv = _infra("promote", "replica")
    argv += ["--topology", v.topology(topology)]
    argv += ["--yes", "--color", "false"]
    return Command(tuple(argv), "promote replica")


def forget_replica(replica: str, *, token_file: str) -> Command:
    """``puppet infrastructure forget <replica>`` (on the master, admin token required)."""
    replica = v.hostname(replica, what="replica")
    argv = _infra("forget", replica, "--color", "false", "--token-file",
                  v.absolute_path(token_file, what="token file"))
    return Command(tuple(argv), f"forget {replica}")


def reinitialize_replica(databases: Sequence[str] = ()) -> Command:
    """``puppet infrastructure reinitialize replica [--db <db> …] -y`` (on the replica). No dbs = all."""
    argv = _infra("reinitialize", "replica")
    seen: list[str] = []
    for db in databases:
        db = v.replica_database(db)
        if db not in seen:
            seen.append(db)
            argv += ["--db", db]
    argv += ["-y", "--color", "false"]
    what = ", ".join(seen) if seen else "all databases"
    return Command(tuple(argv), f"reinitialize replica ({what})")


def infrastructure_status(*, host: str | None = None, verbose: bool = False, json: bool = True) -> Command:
    """``puppet infrastructure status [--verbose] [--host h] [--format json]``."""
    argv = _infra("status")
    if verbose:
        argv.append("--verbose")
    if host is not None:
        argv += ["--host", v.hostname(host)]
    if json:
        argv += ["--format", "json"]
    return Command(tuple(argv), "infrastructure status" + (f" of {host}" if host else ""))


def enable_ha_failover(
    host: str,
    *,
    topology: str,
    caserver: str | None = None,
    replication_timeout_secs: int | None = None,
    tmpdir: str | None = None,
    skip_agent_config: bool = False,
    agent_server_urls: Sequence[str] = (),
    pcp_brokers: Sequence[str] = (),
) -> Command:
    """``puppet infrastructure run enable_ha_failover host=… topology=… […]``, run on the promoted replica.

    The parameters are those of the plan ``enterprise_tasks::enable_ha_failover``. From PE 2019.3 it
    authenticates with the primary's certificate: it takes no ``--token-file``. It refuses
    ``mono-with-compile`` without ``skip_agent_config`` or both URL lists, and so does this builder.
    """
    host = v.hostname(host, what="failed master (host)")
    topology = v.topology(topology)
    urls = [_host_port(u, what="agent_server_urls") for u in agent_server_urls]
    brokers = [_host_port(u, what="pcp_brokers") for u in pcp_brokers]
    if topology == "mono-with-compile" and not skip_agent_config and not (urls and brokers):
        raise ValidationError("topology mono-with-compile needs agent_server_urls and pcp_brokers, or "
                              "skip_agent_config=true (the plan refuses it otherwise)")
    argv = _infra("run", "enable_ha_failover", f"host={host}")
    if caserver is not None:
        argv.append(f"caserver={v.hostname(caserver, what='caserver')}")
    argv.append(f"topology={topology}")
    if replication_timeout_secs is not None:
        argv.append(f"replication_timeout_secs={v.positive_int(replication_timeout_secs, what='replication_timeout_secs', maximum=86400)}")
    if tmpdir is not None:
        argv.append(f"tmpdir={v.absolute_path(tmpdir, what='tmpdir')}")
    if skip_agent_config:
        argv.append("skip_agent_config=true")
    if urls:
        argv.append(f"agent_server_urls={','.join(urls)}")
    if brokers:
        argv.append(f"pcp_brokers={','.join(brokers)}")
    return Command(tuple(argv), f"enable_ha_failover host={host}")


def _host_port(value: str, *, what: str) -> str:
    """``host:port`` (a server or broker URL of the plan's comma-separated lists)."""
    host, sep, port = str(value).strip().rpartition(":")
    if not sep:
        raise ValidationError(f"{what}: {value!r} must be host:port")
    return f"{v.hostname(host, what=what)}:{v.positive_int(int(port) if port.isdigit() else -1, what=what + ' port', maximum=65535)}"


def service(name: str, ensure: str) -> Command:
    """``puppet resource service <name> ensure=running|stopped``."""
    name, ensure = v.service(name), v.ensure(ensure)
    return Command((PUPPET, "resource", "service", name, f"ensure={ensure}"), f"{name} -> {ensure}")


def agent_run(*, noop: bool = False, server_list: Sequence[str] = ()) -> Command:
    """``puppet agent -t [--noop] [--server_list=a,b]``; exit 0/2 succeed, 1 lock/failed, 4/6 failures."""
    argv = [PUPPET, "agent", "-t"]
    if noop:
        argv.append("--noop")
    if server_list:
        # host or host:port, as given (validated: RFC 1123 host, numeric port)
        argv.append("--server_list=" + ",".join(
            v.server_url(s, what="server_list entry", default_port=PUPPET_PORT) if ":" in s
            else v.hostname(s, what="server_list entry") for s in server_list))
    return Command(tuple(argv), "puppet agent -t" + (" --noop" if noop else ""))


def puppetdb_query(pql: str) -> Command:
    """A PQL query to the node's own PuppetDB on its loopback listener (``/pdb/query/v4``). curl exits 7 when
    nothing listens there (PuppetDB stopped, or its cleartext listener turned off), 22 on an HTTP error."""
    if not pql or "\n" in pql or len(pql) > 500:
        raise ValidationError(f"PQL query {pql[:60]!r}: one line of at most 500 characters")
    return Command((PE_CURL, "--silent", "--show-error", "--fail", "--max-time", "120", "--get",
                    f"{PUPPETDB_LOOPBACK}/pdb/query/v4", "--data-urlencode", f"query={pql}"), f"PuppetDB: {pql}")


def puppetdb_status() -> Command:
    """PuppetDB's own status (``puppetdb-status``) on the node's loopback listener: 200 when running, 503 with the
    same body otherwise (so no ``--fail``)."""
    return Command((PE_CURL, "--silent", "--show-error", "--max-time", "10",
                    f"{PUPPETDB_LOOPBACK}/status/v1/services/puppetdb-status"), "PuppetDB's status")


def agent_last_run_summary() -> Command:
    """The agent's ``last_run_summary.yaml``, wherever this Puppet keeps it (``lastrunfile``: PE's Puppet 7 and later
    under ``/opt/puppetlabs/puppet/public``, earlier under the agent's state dir)."""
    script = f"cat -- \"$({PUPPET} config print lastrunfile --section agent)\""
    return Command(("bash", "-c", script), "the agent's last_run_summary.yaml")


def config_print(setting: str, *, section: str = "main") -> Command:
    return Command((PUPPET, "config", "print", v.puppet_setting(setting), "--section", v.puppet_section(section)),
                   f"puppet config print {setting}")


def config_set(setting: str, value: str, *, section: str = "main") -> Command:
    if any(c in value for c in "\n\r\0"):
        raise ValidationError(f"value for {setting} contains a line break")
    if value.startswith("-") or not value.strip():
        # puppet would read a leading dash as an option, and an empty value deletes nothing useful
        raise ValidationError(f"value for {setting} must not be empty or start with '-': {value!r}")
    return Command((PUPPET, "config", "set", v.puppet_setting(setting), value, "--section", v.puppet_section(section)),
                   f"puppet config set {setting}")


def config_delete(setting: str, *, section: str = "main") -> Command:
    return Command((PUPPET, "config", "delete", v.puppet_setting(setting), "--section", v.puppet_section(section)),
                   f"puppet config delete {setting} [{section}]")
