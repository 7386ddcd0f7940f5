"""A procedure's entry: the run's context, built once and handed to the flow's body as ``ctx``.

Prefect sees the flow's parameters without ``ctx`` (the form, the deployment's schema, the CLI). A flow
entered inside another (a subflow), or inside ``pe_ha.context.supplied``, runs in that context; otherwise the
context comes from the environment's settings and its connections close when the flow ends.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

from pe_ha import context
from pe_ha.context import RunContext


def with_run_context(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator, right under ``@flow``: call ``fn(ctx, **parameters)``."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with run_context() as ctx, context.supplied(ctx):  # subflows run in this context
            return fn(ctx, *args, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])  # type: ignore[attr-defined]
    return wrapper


@contextlib.contextmanager
def run_context() -> Iterator[RunContext]:
    """The given context, else one from the environment, closed after the block: for a flow's state hooks,
    which run outside its body, and for a body that must report a failure to build it (the health check)."""
    given = context.given()
    ctx = given or RunContext.from_environment()
    try:
        yield ctx
    finally:
        if given is None:
            ctx.close()


def settings_for_naming() -> Any:
    """The settings a flow run's name is made from, before its body runs: the given context's, else the
    environment's."""
    from pe_ha.settings import get_settings

    given = context.given()
    return given.settings if given is not None else get_settings()
