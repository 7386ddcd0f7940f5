"""Tasks for the admin RBAC token: validate it through PE's RBAC API, stage it on a node for --token-file."""

from __future__ import annotations

import datetime as dt

from prefect import task

from pe_ha import commands
from pe_ha.context import RunContext
from pe_ha.errors import AuthError
from pe_ha.pe_api import token_expiration
from tasks._base import READ, RETRY_CONNECT, logger


@task(name="validate-token", **READ)
def validate_token(ctx: RunContext, min_validity_s: float | None = None, master: str | None = None) -> dict:
    """Authenticate the token; refuse one that expires before the coming long step could finish."""
    s = ctx.settings
    token = s.rbac_token()
    info = ctx.api.authenticate(token, master)
    needed = s.token_min_validity_s if min_validity_s is None else min_validity_s
    expires = token_expiration(info)
    if expires is not None:
        remaining = (expires - dt.datetime.now(dt.UTC)).total_seconds()
        if remaining < needed:
            raise AuthError(f"the RBAC token expires in {max(remaining, 0):.0f} s (at {expires:%Y-%m-%d %H:%M:%S} UTC), "
                            f"less than the {needed:.0f} s this step may need", url="rbac-api/v2/auth/token/authenticate",
                            status=None, hint="issue a longer-lived token: puppet-access login --lifetime 2h")
        logger().info("RBAC token valid for another %.0f s (until %s UTC)", remaining, f"{expires:%Y-%m-%d %H:%M:%S}")
    else:
        logger().info("RBAC token is valid (PE reports no expiration; it is re-checked before each long step)")
    return {"login": info.get("login"), "expires": expires.isoformat() if expires else None}


@task(name="stage-token", task_run_name="stage-token/{host}", **RETRY_CONNECT)
def stage_token(ctx: RunContext, host: str) -> str:
    """Write the token to the node (mode 0600) for ``--token-file``; it never appears in argv or logs."""
    s = ctx.settings
    ex = ctx.executor
    parent = s.remote_token_file.rsplit("/", 1)[0]
    ex.run(host, commands.make_dir(parent))
    ex.put_bytes(host, (s.rbac_token().get_secret_value() + "\n").encode(), s.remote_token_file, mode=0o600)
    return s.remote_token_file


@task(name="remove-staged-token", task_run_name="remove-staged-token/{host}", **RETRY_CONNECT)
def remove_staged_token(ctx: RunContext, host: str) -> None:
    ctx.executor.run(host, commands.remove_files(ctx.settings.remote_token_file))
