"""What one run of a procedure works with: its settings, the executor that reaches PE's nodes and the PE API
client. Built once at the flow's entry and passed, as ``ctx``, to every step and task.

The caller may hand a flow its context with ``supplied(ctx)``: a parent procedure does so for its subflows
(they run in the parent's context), and tests and benchmarks do so to plug in fakes, as httpx takes a
transport. This is read at a flow's entry only; nothing else looks a context up.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar

from pe_ha.executor import Executor
from pe_ha.masking import install_log_masking
from pe_ha.pe_api import PEApi
from pe_ha.settings import Settings, get_settings


class RunContext:
    """Settings, executor and PE API client of one run. The executor and the client are built on first use
    (a run that only reads the classifier opens no SSH connection) unless given."""

    def __init__(self, settings: Settings, *, executor: Executor | None = None, api: PEApi | None = None) -> None:
        self.settings = settings
        self._executor = executor
        self._api = api
        self._given = (executor, api)  # the caller's to close, not this context's
        self._building = threading.Lock()  # tasks run on a thread pool; build each client once

    @classmethod
    def from_environment(cls) -> RunContext:
        """The context of a run started by a worker or the CLI: settings from the environment (``PEHA_*``)."""
        settings = get_settings()
        install_log_masking("prefect", "pe_ha")
        return cls(settings)

    @property
    def executor(self) -> Executor:
        with self._building:
            if self._executor is None:
                from pe_ha.ssh import FabricExecutor  # fabric and paramiko load with the first SSH step

                self._executor = FabricExecutor(self.settings)
            return self._executor

    @property
    def api(self) -> PEApi:
        with self._building:
            if self._api is None:
                self._api = PEApi(self.settings)
            return self._api

    def close(self) -> None:
        """Close the connections this context opened itself."""
        with self._building:
            executor, api = self._executor, self._api
            self._executor, self._api = self._given
        if executor is not None and executor is not self._given[0]:
            executor.close()
        if api is not None and api is not self._given[1]:
            api.close()

    def __repr__(self) -> str:  # Prefect may show a task's parameters; never the settings' values
        return f"RunContext(installation={self.settings.installation!r})"


_supplied: ContextVar[RunContext | None] = ContextVar("pe_ha_supplied_context", default=None)


@contextlib.contextmanager
def supplied(ctx: RunContext) -> Iterator[RunContext]:
    """Flows entered inside this block run in ``ctx`` (and do not close it)."""
    token = _supplied.set(ctx)
    try:
        yield ctx
    finally:
        _supplied.reset(token)


@contextlib.contextmanager
def using(*, settings: Settings, executor: Executor | None = None, api: PEApi | None = None) -> Iterator[RunContext]:
    """Flows entered inside this block run with these settings, and with this executor and API client where
    given (fakes, in tests); connections it opened itself close at the end."""
    ctx = RunContext(settings, executor=executor, api=api)
    try:
        with supplied(ctx):
            yield ctx
    finally:
        ctx.close()


def given() -> RunContext | None:
    """The context handed to flows entered now, if any (read at a flow's entry only)."""
    return _supplied.get()
