"""Tasks that run ``puppet infrastructure`` on the master or the replica (one system: PE's HA tooling)."""

from __future__ import annotations

import json
import re
import time

from prefect import task

from pe_ha import commands, pe_api, versions
from pe_ha.commands import Command
from pe_ha.context import RunContext
from pe_ha.errors import CommandFailed, PreconditionFailed, RemoteTimeout, WaitTimedOut
from pe_ha.forecast import time_left
from tasks._base import READ, SIDE_EFFECT, logger


def read_status(ctx: RunContext, on_host: str, of_host: str | None = None, timeout_s: float = 120) -> list[dict]:
    """``puppet infrastructure status --format json`` run on ``on_host`` (a plain read, no task run of its own)."""
    result = ctx.executor.run(on_host, commands.infrastructure_status(host=of_host), timeout_s=timeout_s,
                                    stream=False)
    try:
        entries = json.loads(result.stdout)
    except ValueError:
        raise CommandFailed(host=on_host, command="puppet infrastructure status --format json", exit_code=0,
                            output=result.stdout[-500:], hint="status did not print JSON") from None
    if not isinstance(entries, list):
        raise CommandFailed(host=on_host, command="puppet infrastructure status", exit_code=0, output=str(entries)[:200])
    return entries


@task(name="infrastructure-status", **READ)
def infrastructure_status(ctx: RunContext, on_host: str, of_host: str | None = None, timeout_s: float = 120) -> list[dict]:
    """``puppet infrastructure status --format json`` run on ``on_host``, as a retried task."""
    return read_status(ctx, on_host, of_host, timeout_s)


def error_alerts(entry: dict) -> list[str]:
    """An entry's alerts that are not warnings or information: a service can be ``running`` while its database
    replication is inactive, which PE reports only as an error alert (peadm's infrastatus.json capture)."""
    return [str(a.get("message") or a) for a in pe_api.failing_alerts(entry.get("alerts"))]


def summarize(entries: list[dict]) -> str:
    operational = sum(1 for e in entries if e.get("state") == "running" and not error_alerts(e))
    return f"{operational} of {len(entries)} services are fully operational"


def not_operational(entries: list[dict]) -> list[str]:
    """Each service that is not running, or running with an error alert, with its reason."""
    out = []
    for e in entries:
        alerts = error_alerts(e)
        if e.get("state") != "running" or alerts:
            out.append(f"{e.get('display_name')} on {e.get('server')}: {e.get('state')}"
                       + "".join(f" ({alert})" for alert in alerts))
    return out


@task(name="provision-replica", task_run_name="provision-replica/{master}", **SIDE_EFFECT)
def provision_replica(ctx: RunContext, master: str, cmd: Command) -> str:
    """``puppet infrastructure provision replica <replica>`` on the master."""
    return ctx.executor.run(master, cmd).stdout


POSTGRESQL_PORT = 5432


def replication_port(ctx: RunContext, master: str, replica: str) -> str:
    """Whether PostgreSQL's port answers each way between master and replica (PE's databases replicate over it),
    for a wait that ended without an active replication. A probe that cannot run says so."""
    out = []
    for source, target in ((replica, master), (master, replica)):
        try:
            result = ctx.executor.run(source, commands.tcp_probe_ports(target, [POSTGRESQL_PORT]), check=False,
                                      timeout_s=15, stream=False)
            seen = "open" if str(POSTGRESQL_PORT) in result.stdout.split() else "closed"
        except Exception as exc:  # a diagnosis only: the wait's own failure is the one reported
            seen = f"not probed ({type(exc).__name__})"
        out.append(f"port {POSTGRESQL_PORT} {source} -> {target}: {seen}")
    return ", ".join(out)


@task(name="wait-for-replica-sync", task_run_name="wait-for-replica-sync/{replica}", **SIDE_EFFECT)
def wait_for_replica_operational(ctx: RunContext, master: str, replica: str, timeout_s: float, poll_s: float = 5.0,
                                 expected_s: float = 0) -> list[dict]:
    """Wait, bounded, until every replica service in ``status --format json`` is running (PuppetDB not starting)
    with no error alert (an inactive database replication shows only as one). Each look says how much of the
    step's forecast (``expected_s``) is left."""
    log = logger()
    started = time.monotonic()
    deadline = started + timeout_s
    last: list[dict] | str = "no status read yet"
    while True:
        try:
            # Each status call is bounded by what is left of the wait: a master cut off mid-call must not
            # stretch the wait to the command's own limit.
            remaining = max(5.0, min(120.0, deadline - time.monotonic()))
            entries = read_status(ctx, master, replica, timeout_s=remaining)
            last = entries
            if entries and not not_operational(entries):
                log.info("replica %s: %s", replica, summarize(entries))
                return entries
            left = time_left(expected_s, time.monotonic() - started)
            log.info("replica %s: %s; waiting for %s%s", replica, summarize(entries), "; ".join(not_operational(entries)),
                     f" ({left})" if left else "")
        except (CommandFailed, RemoteTimeout) as exc:
            last = f"status failed: {exc}"
            log.warning("status of %s not readable yet: %s", replica, exc)
        except Exception as exc:  # connection loss to the master: keep waiting within the bound
            if not getattr(exc, "retryable", False):
                raise
            last = f"master unreachable: {exc}"
            log.warning("%s", last)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = "; ".join(not_operational(last)) if isinstance(last, list) else last
            raise WaitTimedOut(f"replica {replica} was not fully operational after {timeout_s:g} s (last seen: {detail}; "
                               f"{replication_port(ctx, master, replica)})",
                               last_seen=last,
                               hint="check `puppet infrastructure status --verbose` on the master; a large PuppetDB "
                                    "may need a longer sync_timeout_s or the manual PuppetDB copy")
        time.sleep(min(poll_s, remaining))


@task(name="enable-replica", task_run_name="enable-replica/{master}", **SIDE_EFFECT)
def enable_replica(ctx: RunContext, master: str, cmd: Command) -> str:
    """``puppet infrastructure enable replica`` with every prompt answered by flags."""
    return ctx.executor.run(master, cmd).stdout


@task(name="promote-replica", task_run_name="promote-replica/{replica}", **SIDE_EFFECT)
def promote_replica(ctx: RunContext, replica: str, cmd: Command, timeout_s: float) -> str:
    """``puppet infrastructure promote replica`` on the replica, bounded by the flow's own ``timeout_s``."""
    return ctx.executor.run(replica, cmd, timeout_s=timeout_s).stdout


@task(name="forget-replica", task_run_name="forget-replica/{master}", **SIDE_EFFECT)
def forget_replica(ctx: RunContext, master: str, cmd: Command) -> str:
    """``puppet infrastructure forget <replica>`` on the master."""
    return ctx.executor.run(master, cmd).stdout


@task(name="reinitialize-replica", task_run_name="reinitialize-replica/{replica}", **SIDE_EFFECT)
def reinitialize_replica(ctx: RunContext, replica: str, cmd: Command) -> str:
    """``puppet infrastructure reinitialize replica [--db …] -y`` on the replica."""
    return ctx.executor.run(replica, cmd).stdout


@task(name="enable-ha-failover", task_run_name="enable-ha-failover/{on_host}", **SIDE_EFFECT)
def enable_ha_failover(ctx: RunContext, on_host: str, cmd: Command, plan_timeout_s: float) -> str:
    """``puppet infrastructure run enable_ha_failover`` on the promoted replica, killed at ``plan_timeout_s``."""
    try:
        return ctx.executor.run(on_host, cmd, timeout_s=plan_timeout_s).stdout
    except RemoteTimeout:
        raise RemoteTimeout(f"enable_ha_failover did not finish within plan_timeout_s={plan_timeout_s:g} and was killed",
                            host=on_host,
                            hint="check /var/log/puppetlabs/installer/bolt_info.log on the host, then re-run") from None


def compilers(entries: list[dict], masters: tuple[str, ...]) -> list[str]:
    """The compilers in ``puppet infrastructure status``: every server with a Puppet Server (``type`` ``master``)
    that is not one of ``masters`` (the master and its replica). peadm's ``classify_compilers.rb`` reads the same
    field per host."""
    return sorted({str(e.get("server")) for e in entries
                   if e.get("type") == "master" and e.get("server") and e.get("server") not in masters})


def require_topology(topology: str, found: list[str], *, status_on: str) -> None:
    """PE's ``--topology mono`` means no compilers: with compilers it would point every agent at the masters alone."""
    if topology == "mono" and found:
        raise PreconditionFailed(
            f"topology=mono, but puppet infrastructure status on {status_on} lists compilers: {', '.join(found)}",
            hint="pass topology=mono-with-compile with agent_server_urls and pcp_brokers (your compilers or their "
                 "load balancer), or with skip_agent_config")


def compilers_fact(found: list[str] | None) -> str:
    """The plan's line for the compilers read (``None``: the status could not be read)."""
    return "compilers: " + ("not read (topology unchecked)" if found is None else ", ".join(found) or "none")


@task(name="pe-version", task_run_name="pe-version/{host}", **READ)
def pe_version(ctx: RunContext, host: str) -> versions.PeVersion:
    """The PE version on ``host``, refused with a clear message when pe-ha does not support it."""
    text = ctx.executor.run(host, commands.pe_version(), timeout_s=30, stream=False).stdout
    return versions.require_supported(text, host)


def _replica_files(version: versions.PeVersion) -> list[tuple[str, bool]]:
    """The files a new replica needs from the master, each with whether PE requires it (the version's secret keys)
    or copies it when present (``hiera.yaml``, ``ad_ca_chain.pem``)."""
    return [(path, True) for path in version.secret_key_files] + [(p, False) for p in versions.REPLICA_FILES_IF_PRESENT]


R10K_KEY_IN_PE_CONF = re.compile(r'^\s*"?puppet_enterprise::profile::master::r10k_private_key"?\s*[:=]', re.M)


@task(name="r10k-key-in-pe-conf", task_run_name="r10k-key-in-pe-conf/{master}", **READ)
def r10k_key_in_pe_conf(ctx: RunContext, master: str) -> bool:
    """Does the primary's pe.conf set Code Manager's ``r10k_private_key``? Only that answer leaves this task:
    pe.conf may hold passwords, so its text is never a result, a log line or an artifact."""
    result = ctx.executor.run(master, commands.read_pe_conf(), check=False, timeout_s=30, stream=False)
    return result.exit_code == 0 and R10K_KEY_IN_PE_CONF.search(result.stdout) is not None


@task(name="replica-files-present", task_run_name="replica-files-present/{master}", **READ)
def replica_files_present(ctx: RunContext, master: str, version: versions.PeVersion) -> dict[str, bool]:
    """Which of the files a new replica needs the master has."""
    ex = ctx.executor
    return {path: ex.run(master, commands.file_exists(path), check=False, timeout_s=30, stream=False).exit_code == 0
            for path, _ in _replica_files(version)}


def replica_file_plan(master: str, replica: str, version: versions.PeVersion,
                      present: dict[str, bool]) -> list[tuple[str, Command]]:
    """The copy of each file the master has: the folder (0755), ``scp -p``, then 0644, as peadm's
    ``util/copy_file.pp`` leaves it (root-owned; PE's service users do not exist on the replica yet). Refused when a
    secret key this PE version needs is missing."""
    files = _replica_files(version)
    missing = [path for path, required in files if required and not present.get(path)]
    if missing:
        raise PreconditionFailed(f"{master} has no {', '.join(missing)}, which PE {version} copies to a new replica",
                                 hint="check the master's PE installation (puppet infrastructure configure)")
    return [pair for path, _ in files if present.get(path)
            for pair in ((replica, commands.make_dir(path.rsplit("/", 1)[0], mode="0755")),
                         (master, commands.copy_preserving(path, host=replica)),
                         (replica, commands.make_readable(path)))]


@task(name="copy-replica-files", task_run_name="copy-replica-files/{replica}", **SIDE_EFFECT)
def copy_replica_files(ctx: RunContext, replica: str, planned: list[tuple[str, Command]]) -> None:
    """Copy the files a new replica needs from the master, as planned."""
    ex = ctx.executor
    for host, cmd in planned:
        ex.run(host, cmd, timeout_s=120)
    logger().info("copied %d file(s) to %s", len(planned) // 3, replica)
