"""Tasks that run ``puppet infrastructure`` on the master or the replica (one system: PE's HA tooling)."""

from __future__ import annotations

import json
import time

from prefect import task

from pe_ha import commands, runtime, versions
from pe_ha.commands import Command
from pe_ha.errors import CommandFailed, PreconditionFailed, RemoteTimeout, WaitTimedOut
from tasks._base import READ, SIDE_EFFECT, logger


@task(name="infrastructure-status", **READ)
def infrastructure_status(on_host: str, of_host: str | None = None, timeout_s: float = 120) -> list[dict]:
    """``puppet infrastructure status --format json`` run on ``on_host``."""
    result = runtime.executor().run(on_host, commands.infrastructure_status(host=of_host), timeout_s=timeout_s,
                                    stream=False)
    try:
        entries = json.loads(result.stdout)
    except ValueError:
        raise CommandFailed(host=on_host, command="puppet infrastructure status --format json", exit_code=0,
                            output=result.stdout[-500:], hint="status did not print JSON") from None
    if not isinstance(entries, list):
        raise CommandFailed(host=on_host, command="puppet infrastructure status", exit_code=0, output=str(entries)[:200])
    return entries


def summarize(entries: list[dict]) -> str:
    running = sum(1 for e in entries if e.get("state") == "running")
    return f"{running} of {len(entries)} services are fully operational"


def not_running(entries: list[dict]) -> list[str]:
    return [f"{e.get('display_name')} on {e.get('server')}: {e.get('state')}" for e in entries if e.get("state") != "running"]


@task(name="provision-replica", task_run_name="provision-replica/{master}", **SIDE_EFFECT)
def provision_replica(master: str, cmd: Command) -> str:
    """``puppet infrastructure provision replica <replica>`` on the master."""
    return runtime.executor().run(master, cmd).stdout


@task(name="wait-for-replica-sync", task_run_name="wait-for-replica-sync/{replica}", **SIDE_EFFECT)
def wait_for_replica_operational(master: str, replica: str, timeout_s: float, poll_s: float = 5.0) -> list[dict]:
    """Wait, bounded, until every replica service in ``status --format json`` is running (PuppetDB not starting)."""
    log = logger()
    deadline = time.monotonic() + timeout_s
    last: list[dict] | str = "no status read yet"
    while True:
        try:
            # Each status call is bounded by what is left of the wait: a master cut off mid-call must not
            # stretch the wait to the command's own limit.
            remaining = max(5.0, min(120.0, deadline - time.monotonic()))
            entries = infrastructure_status.fn(master, replica, timeout_s=remaining)
            last = entries
            if entries and not not_running(entries):
                log.info("replica %s: %s", replica, summarize(entries))
                return entries
            log.info("replica %s: %s; waiting for %s", replica, summarize(entries), "; ".join(not_running(entries)))
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
            detail = "; ".join(not_running(last)) if isinstance(last, list) else last
            raise WaitTimedOut(f"replica {replica} was not fully operational after {timeout_s:g} s (last seen: {detail})",
                               last_seen=last,
                               hint="check `puppet infrastructure status --verbose` on the master; a large PuppetDB "
                                    "may need a longer sync_timeout_s or the manual PuppetDB copy")
        time.sleep(min(poll_s, remaining))


@task(name="enable-replica", task_run_name="enable-replica/{master}", **SIDE_EFFECT)
def enable_replica(master: str, cmd: Command) -> str:
    """``puppet infrastructure enable replica`` with every prompt answered by flags."""
    return runtime.executor().run(master, cmd).stdout


@task(name="promote-replica", task_run_name="promote-replica/{replica}", **SIDE_EFFECT)
def promote_replica(replica: str, cmd: Command) -> str:
    """``puppet infrastructure promote replica`` on the replica."""
    return runtime.executor().run(replica, cmd).stdout


@task(name="forget-replica", task_run_name="forget-replica/{master}", **SIDE_EFFECT)
def forget_replica(master: str, cmd: Command) -> str:
    """``puppet infrastructure forget <replica>`` on the master."""
    return runtime.executor().run(master, cmd).stdout


@task(name="reinitialize-replica", task_run_name="reinitialize-replica/{replica}", **SIDE_EFFECT)
def reinitialize_replica(replica: str, cmd: Command) -> str:
    """``puppet infrastructure reinitialize replica [--db …] -y`` on the replica."""
    return runtime.executor().run(replica, cmd).stdout


@task(name="enable-ha-failover", task_run_name="enable-ha-failover/{on_host}", **SIDE_EFFECT)
def enable_ha_failover(on_host: str, cmd: Command, plan_timeout_s: float) -> str:
    """``puppet infrastructure run enable_ha_failover`` on the promoted replica, killed at ``plan_timeout_s``."""
    try:
        return runtime.executor().run(on_host, cmd, timeout_s=plan_timeout_s).stdout
    except RemoteTimeout:
        raise RemoteTimeout(f"enable_ha_failover did not finish within plan_timeout_s={plan_timeout_s:g} and was killed",
                            host=on_host,
                            hint="check /var/log/puppetlabs/installer/bolt_info.log on the host, then re-run") from None


def require_role(entries: list[dict], host: str, expected_type: str) -> None:
    if not any(e.get("server") == host and e.get("type") == expected_type for e in entries):
        raise PreconditionFailed(f"{host} is not the {expected_type} according to puppet infrastructure status")


@task(name="pe-version", task_run_name="pe-version/{host}", **READ)
def pe_version(host: str) -> str:
    """The PE version on ``host``, refused with a clear message when pe-ha does not support it."""
    text = runtime.executor().run(host, commands.pe_version(), timeout_s=30, stream=False).stdout
    return str(versions.require_supported(text, host))


def secret_key_commands(master: str, replica: str, version: str) -> tuple[list[tuple[str, Command]], list[tuple[str, Command]]]:
    """The secret-key copy for a PE version: the checks that each file is on the master, then the copies."""
    parsed = versions.parse(version)
    assert parsed is not None
    files = parsed.secret_key_files
    checks = [(master, commands.file_exists(path)) for path in files]
    copies = [pair for path in files for pair in ((replica, commands.make_dir(path.rsplit("/", 1)[0])),
                                                  (master, commands.copy_preserving(path, host=replica)))]
    return checks, copies


@task(name="copy-secret-keys", task_run_name="copy-secret-keys/{replica}", **SIDE_EFFECT)
def copy_secret_keys(master: str, replica: str, version: str) -> list[str]:
    """Copy the secret key files this PE version needs on a new replica from the master (mode kept)."""
    ex = runtime.executor()
    checks, copies = secret_key_commands(master, replica, version)
    missing = [cmd.argv[-1] for host, cmd in checks if ex.run(host, cmd, check=False, timeout_s=30, stream=False).exit_code]
    if missing:
        raise PreconditionFailed(f"{master} has no {', '.join(missing)}, which PE {version} copies to a new replica",
                                 hint="check the master's PE installation (puppet infrastructure configure)")
    for host, cmd in copies:
        ex.run(host, cmd, timeout_s=120)
    logger().info("copied %d secret key file(s) from %s to %s", len(checks), master, replica)
    return [cmd.argv[-1] for _, cmd in checks]
