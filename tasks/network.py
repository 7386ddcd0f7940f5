"""Tasks for the failover drill: cut the master off from chosen hosts with iptables on the master, and reconnect."""

from __future__ import annotations

from prefect import task

from pe_ha import commands
from pe_ha.context import RunContext
from pe_ha.errors import CommandFailed, PreconditionFailed
from pe_ha.validation import hostname
from tasks._base import READ, RETRY_CONNECT, logger


@task(name="resolve-address", task_run_name="resolve/{host}", **READ)
def resolve(ctx: RunContext, on_host: str, host: str) -> str:
    """The IPv4 address ``on_host`` uses for ``host`` (the inventory address when it is already one)."""
    entry = ctx.settings.host(host)
    if entry.address and commands.is_ipv4(entry.address):
        return entry.address
    out = ctx.executor.run(on_host, commands.resolve_ipv4(hostname(host)), timeout_s=30).stdout.split()
    if not out:
        raise CommandFailed(host=on_host, command=f"getent ahostsv4 {host}", exit_code=2, output="no address")
    return out[0]


@task(name="cut-off-from-master", task_run_name="cut-off/{address}", **RETRY_CONNECT)
def isolate(ctx: RunContext, master: str, address: str) -> None:
    """DROP traffic between the master and ``address`` (iptables on the master, as the guide suggests)."""
    ex = ctx.executor
    for cmd in commands.drill_block(address):
        ex.run(master, cmd, timeout_s=30)
    logger().warning("drill: %s is cut off from %s", address, master)


def remove_drill_rules(ctx: RunContext, master: str, address: str) -> None:
    """Remove every drill rule for ``address`` (idempotent), duplicates too."""
    ex = ctx.executor
    for cmd in commands.drill_unblock(address):
        for _ in range(10):
            if ex.run(master, cmd, check=False, timeout_s=30).exit_code != 0:
                break
    logger().info("drill: %s reconnected to %s", address, master)


@task(name="reconnect-to-master", task_run_name="reconnect/{address}", cache_policy=READ["cache_policy"], retries=5,
      retry_delay_seconds=[1, 2, 4, 8, 16])
def reconnect(ctx: RunContext, master: str, address: str) -> None:
    """Remove the drill's rules for ``address``, as a task retried hard, because it must happen."""
    remove_drill_rules(ctx, master, address)


def reconnect_all(ctx: RunContext, master: str, addresses: list[str]) -> None:
    """Best-effort reconnect from hooks (cancellation/crash): plain calls, no Prefect task run needed."""
    for address in addresses:
        try:
            remove_drill_rules(ctx, master, address)
        except Exception as exc:  # keep trying the others; the operator is told
            logger().error("drill: could not reconnect %s to %s: %s — remove the iptables rules by hand", address, master, exc)


@task(name="check-ssh", task_run_name="check-ssh/{from_host}->{to_host}", **READ)
def require_ssh(ctx: RunContext, from_host: str, to_host: str) -> None:
    """``from_host`` must reach ``to_host`` over ssh as root without a prompt (``puppet infrastructure run`` does)."""
    result = ctx.executor.run(from_host, commands.ssh_check(to_host), check=False, timeout_s=30, stream=False)
    if result.exit_code:
        raise PreconditionFailed(f"{from_host} cannot ssh to {to_host} as root (exit {result.exit_code}: "
                                 f"{(result.stderr or result.stdout).strip()[:160]})",
                                 hint=f"add {from_host}'s root key to {to_host}'s /root/.ssh/authorized_keys and "
                                      f"{to_host}'s host key to {from_host}'s known_hosts")
