"""PE's orchestrator: a Puppet run on every active node as one job, followed to the end through its jobs API."""

from __future__ import annotations

import contextlib
import time

from prefect import task

from pe_ha.commands import AGENT_NODES_QUERY
from pe_ha.context import RunContext
from pe_ha.errors import ApiUnavailable, PostconditionFailed, WaitTimedOut
from pe_ha.pe_api import JOB_FINAL_STATES, JobNode
from tasks._base import SIDE_EFFECT, logger

POLL_S = 5.0


@task(name="orchestrator-job", task_run_name="orchestrator-job/{master}", **SIDE_EFFECT)
def run_puppet_everywhere(ctx: RunContext, master: str, timeout_s: float = 3600) -> dict[str, int]:
    """What ``puppet job run --no-enforce-environment --query 'nodes {…}'`` starts, started through the
    orchestrator's API and followed there until the job ends: it succeeds only when every node finished.

    The job is the orchestrator's, not this process's: when the wait ends early (its bound, a cancellation,
    a crash of the wait itself) the job is stopped, so no node starts a run after pe-ha gave up on it.
    Returns how many nodes ended in each state.
    """
    api, token = ctx.api, ctx.settings.rbac_token()
    job = api.deploy(token, master, AGENT_NODES_QUERY)
    logger().info("orchestrator job %s started on %s", job, master)
    deadline = time.monotonic() + timeout_s
    try:
        state = _wait_for_the_end(ctx, master, job, deadline)
    except BaseException:
        with contextlib.suppress(Exception):  # the failure that ended the wait is the one to report
            api.stop_job(token, master, job)
            logger().warning("orchestrator job %s stopped: pe-ha no longer follows it", job)
        raise
    nodes = api.job_nodes(token, master, job)
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node.state] = counts.get(node.state, 0) + 1
    unfinished = [n for n in nodes if n.state != "finished"]
    if state != "finished" or unfinished:
        raise PostconditionFailed(
            f"orchestrator job {job} on {master} ended {state}: " + (_describe(unfinished) or "no node failed"),
            hint=f"see the job in the console (Jobs, {job}) or `puppet job show {job}`; fix the nodes named and "
                 "deploy again")
    logger().info("orchestrator job %s finished on %d nodes", job, len(nodes))
    return counts


def _wait_for_the_end(ctx: RunContext, master: str, job: str, deadline: float) -> str:
    api, token = ctx.api, ctx.settings.rbac_token()
    last = "new"
    while True:
        try:
            last = api.job_state(token, master, job)
        except ApiUnavailable as exc:  # a restart of the orchestrator is waited out, within the bound
            logger().warning("orchestrator job %s: %s; asking again", job, exc)
        if last in JOB_FINAL_STATES:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimedOut(f"orchestrator job {job} on {master} is still {last} at its bound", last_seen=last,
                               hint="the job was stopped; look at its nodes in the console before deploying again")
        time.sleep(POLL_S)


def _describe(nodes: list[JobNode]) -> str:
    shown = [f"{n.name} {n.state}" + (f" ({n.message[:160]})" if n.message else "") for n in nodes[:10]]
    more = f" and {len(nodes) - 10} more" if len(nodes) > 10 else ""
    return "; ".join(shown) + more
