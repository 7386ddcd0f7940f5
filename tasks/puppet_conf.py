"""Tasks that read or change a node's puppet.conf through ``puppet config``."""

from __future__ import annotations

from prefect import task

from pe_ha import commands
from pe_ha.context import RunContext
from tasks._base import READ, RETRY_CONNECT


@task(name="read-puppet-setting", task_run_name="read-{setting}/{host}", **READ)
def read_setting(ctx: RunContext, host: str, setting: str, section: str = "main") -> str:
    """``puppet config print <setting> --section <section>`` (empty when unset)."""
    return ctx.executor.run(host, commands.config_print(setting, section=section), timeout_s=60).stdout.strip()


@task(name="delete-puppet-setting", task_run_name="delete-{setting}/{host}", **RETRY_CONNECT)
def delete_setting(ctx: RunContext, host: str, setting: str, section: str = "main") -> bool:
    """``puppet config delete <setting> --section <section>``; True when a line was removed. Idempotent."""
    out = ctx.executor.run(host, commands.config_delete(setting, section=section), timeout_s=60).stdout
    return out.startswith("Deleted")
