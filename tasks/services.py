"""Tasks that read and set PE service state on a node (``puppet resource service``)."""

from __future__ import annotations

import re

from prefect import task

from pe_ha import commands
from pe_ha.context import RunContext
from tasks._base import READ, RETRY_CONNECT

_ENSURE = re.compile(r"ensure\s*=>\s*'(\w+)'")


@task(name="service-state", task_run_name="service-state/{name}@{host}", **READ)
def service_state(ctx: RunContext, host: str, name: str) -> str:
    """The service's current ``ensure`` value: running or stopped."""
    out = ctx.executor.run(host, commands.service_state(name), timeout_s=120).stdout
    match = _ENSURE.search(out)
    return match.group(1) if match else "unknown"


@task(name="set-service", task_run_name="{name}={ensure}@{host}", **RETRY_CONNECT)
def set_service(ctx: RunContext, host: str, name: str, ensure: str) -> str:
    """``puppet resource service <name> ensure=<ensure>`` (idempotent, so safe to retry)."""
    ctx.executor.run(host, commands.service(name, ensure), timeout_s=600)
    return ensure
