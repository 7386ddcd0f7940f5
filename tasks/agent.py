"""Tasks that run the Puppet agent (``puppet agent -t``) on nodes over SSH."""

from __future__ import annotations

import time
from collections.abc import Sequence

from prefect import task
from prefect.futures import PrefectFuture, as_completed

from pe_ha import commands
from pe_ha.agent_report import no_changes_problem
from pe_ha.commands import Command
from pe_ha.context import RunContext
from pe_ha.errors import CommandFailed, WaitTimedOut
from tasks._base import RETRY_CONNECT, logger

AGENT_OK = (0, 2)  # 0: no changes, 2: changes applied
_LOCKED = "already in progress"


@task(name="puppet-agent-run", task_run_name="puppet-agent{suffix}/{host}", **RETRY_CONNECT)
def agent_run(ctx: RunContext, host: str, cmd: Command, lock_wait_s: float = 600, expect_no_changes: bool = False,
              suffix: str = "") -> int:
    """``puppet agent -t`` (``cmd``) on ``host``. Waits (bounded) for another run's lock; 0 and 2 succeed, 1/4/6 fail.

    ``expect_no_changes`` also reads the run's ``last_run_summary.yaml``: a ``--noop`` run exits 0 with changes
    pending, so only the summary's out-of-sync and noop counts say "no changed resources".
    """
    ex = ctx.executor
    deadline = time.monotonic() + lock_wait_s
    while True:
        result = ex.run(host, cmd, check=False, timeout_s=1800)
        if result.exit_code == 1 and _LOCKED in result.stdout + result.stderr:
            if time.monotonic() >= deadline:
                raise WaitTimedOut(f"{host}: another Puppet run held the agent lock for more than {lock_wait_s:g} s",
                                   last_seen="agent_catalog_run.lock present",
                                   hint="check for a stuck puppet agent process on the node")
            logger().info("%s: another Puppet run is in progress; waiting for its lock", host)
            time.sleep(min(5.0, max(0.5, deadline - time.monotonic())))
            continue
        break
    if result.exit_code not in AGENT_OK:
        meaning = {1: "the run failed", 4: "the run had failures", 6: "the run had changes and failures"}
        raise CommandFailed(host=host, command=result.command, exit_code=result.exit_code,
                            output=result.stdout + "\n" + result.stderr,
                            hint=meaning.get(result.exit_code, "unexpected exit code"))
    if expect_no_changes:
        summary = ex.run(host, commands.agent_last_run_summary(), check=False, timeout_s=60)
        problem = ("last_run_summary.yaml could not be read: " + summary.stderr.strip()[:200]
                   if summary.exit_code != 0 else no_changes_problem(summary.stdout, result.stdout))
        if problem:
            raise CommandFailed(host=host, command=result.command, exit_code=result.exit_code, output=result.stdout,
                                hint=f"the run shows changes where none were expected: {problem}")
    return result.exit_code


def agent_runs(ctx: RunContext, hosts: Sequence[str], cmd: Command, *, limit: int | None = None) -> dict[str, int]:
    """``puppet agent -t`` on every host, at most ``limit`` at once (default: the agent_concurrency setting).

    A sliding window, not waves: a new run starts as soon as one finishes. Every host gets its run even when
    another fails; the failures are then raised together, naming each host. Call from inside a flow whose
    task runner has at least ``limit`` workers.
    """
    limit = limit or ctx.settings.agent_concurrency
    queue = list(hosts)
    running: dict[PrefectFuture, str] = {}
    codes: dict[str, int] = {}
    failures: dict[str, BaseException] = {}
    while queue or running:
        while queue and len(running) < limit:
            host = queue.pop(0)
            future: PrefectFuture = agent_run.submit(ctx, host, cmd)
            running[future] = host
        done = next(as_completed(list(running)))
        host = running.pop(done)
        try:
            codes[host] = done.result()
        except Exception as exc:  # collected: the other nodes still get their runs
            failures[host] = exc
    if failures:
        first = next(iter(failures.values()))
        raise CommandFailed(host=", ".join(sorted(failures)), command="puppet agent -t",
                            exit_code=getattr(first, "exit_code", 1),
                            output="; ".join(f"{h}: {e}" for h, e in sorted(failures.items()))[:2000],
                            hint=f"{len(failures)} of {len(hosts)} agent runs failed; see each node's task run") from first
    return codes
