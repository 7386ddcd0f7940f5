"""Tasks that ask a node's own PuppetDB, over its loopback listener (``/pdb/query/v4`` and its status), whether it
serves a copied database: the copy's acceptance by PuppetDB itself, beside pe-ha's own check of the rows."""

from __future__ import annotations

import json
import time

from prefect import task

from pe_ha import commands
from pe_ha.context import RunContext
from pe_ha.errors import PostconditionFailed, WaitTimedOut
from tasks._base import READ, logger

# What the acceptance counts on both ends: cheap aggregate queries over every kind of data an agent run stores.
ACCEPTANCE_COUNTS: dict[str, str] = {
    "nodes": "nodes[count()] {}",
    "factsets": "factsets[count()] {}",
    "catalogs": "catalogs[count()] {}",
    "resources": "resources[count()] {}",
    "reports": "reports[count()] {}",
}
CURL_CANNOT_CONNECT = 7  # curl's exit code when nothing listens


def _answer(host: str, what: str, text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        raise PostconditionFailed(f"PuppetDB on {host} answered {what} with something that is not JSON: "
                                  f"{text.strip()[:200]!r}") from None


@task(name="puppetdb-counts", task_run_name="puppetdb-counts/{host}", **READ)
def pql_counts(ctx: RunContext, host: str) -> dict[str, int] | None:
    """The counts of ``ACCEPTANCE_COUNTS`` in ``host``'s PuppetDB; ``None`` when nothing listens on its loopback
    (PuppetDB stopped, or its cleartext listener turned off)."""
    counts: dict[str, int] = {}
    for name, pql in ACCEPTANCE_COUNTS.items():
        result = ctx.executor.run(host, commands.puppetdb_query(pql), timeout_s=150, stream=False,
                                  ok_codes=(0, CURL_CANNOT_CONNECT))
        if result.exit_code == CURL_CANNOT_CONNECT:
            return None
        body = _answer(host, pql, result.stdout)
        if not (isinstance(body, list) and len(body) == 1 and isinstance(body[0], dict)
                and isinstance(body[0].get("count"), int)):
            raise PostconditionFailed(f"PuppetDB on {host} answered {pql!r} with {result.stdout.strip()[:200]!r}, "
                                      "not one count")
        counts[name] = body[0]["count"]
    return counts


def puppetdb_state(ctx: RunContext, host: str) -> str:
    """``puppetdb-status``'s ``state`` on ``host`` (running, starting, …), or ``not listening``."""
    result = ctx.executor.run(host, commands.puppetdb_status(), timeout_s=30, stream=False,
                              ok_codes=(0, CURL_CANNOT_CONNECT))
    if result.exit_code == CURL_CANNOT_CONNECT:
        return "not listening"
    body = _answer(host, "its status", result.stdout)
    return str(body.get("state", "unknown")) if isinstance(body, dict) else "unknown"


@task(name="wait-for-puppetdb", task_run_name="wait-for-puppetdb/{host}", **READ)
def wait_for_puppetdb(ctx: RunContext, host: str, timeout_s: float, poll_s: float = 3.0) -> float:
    """Wait, bounded, until ``host``'s PuppetDB reports ``running``; returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        state = puppetdb_state(ctx, host)
        if state == "running":
            return time.monotonic() - started
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimedOut(f"PuppetDB on {host} was not running {timeout_s:g} s after the copy (last: {state})",
                               last_seen=state,
                               hint=f"read /var/log/puppetlabs/puppetdb/puppetdb.log on {host}")
        logger().info("PuppetDB on %s: %s; waiting", host, state)
        time.sleep(min(poll_s, remaining))


def acceptance_problems(before: dict[str, int], found: dict[str, int], after: dict[str, int]) -> list[str]:
    """What the target's PuppetDB answers outside what the source answered before and after the copy. The copy is
    a snapshot taken between the two reads; the source may have grown (new runs) or shrunk (its report TTL) since,
    and the target may have pulled the source's newest reports by PuppetDB's sync since it started."""
    problems = []
    for name in ACCEPTANCE_COUNTS:
        low, high = sorted((before[name], after[name]))
        if not low <= found[name] <= high:
            window = f"{low}" if low == high else f"between {low} and {high}"
            problems.append(f"{name}: {found[name]} (the source had {window})")
    return problems
