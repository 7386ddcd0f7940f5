"""Process-wide providers for the executor and the PE API client, with a seam for tests.

Production builds a ``FabricExecutor`` and a ``PEApi`` from the settings on first use. Tests install
fakes with ``use(executor=FakeExecutor(), api=..., settings=...)``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from pe_ha.executor import Executor
from pe_ha.masking import install_log_masking
from pe_ha.pe_api import PEApi
from pe_ha.settings import Settings, get_settings

_lock = threading.RLock()
_state: dict[str, Any] = {}


def settings() -> Settings:
    with _lock:
        if "settings" not in _state:
            _state["settings"] = get_settings()
            install_log_masking("prefect", "pe_ha")
        return _state["settings"]


def executor() -> Executor:
    with _lock:
        if "executor" not in _state:
            from pe_ha.ssh import FabricExecutor  # fabric and paramiko load with the first SSH step, not the flow

            _state["executor"] = FabricExecutor(settings())
        return _state["executor"]


def api() -> PEApi:
    with _lock:
        if "api" not in _state:
            _state["api"] = PEApi(settings())
        return _state["api"]


def reset() -> None:
    """Drop cached clients (closing connections), e.g. at the end of a flow run."""
    with _lock:
        ex = _state.pop("executor", None)
        if ex is not None:
            ex.close()
        client = _state.pop("api", None)
        if client is not None:
            client.close()


@contextlib.contextmanager
def use(*, executor: Executor | None = None, api: Any = None, settings: Settings | None = None) -> Iterator[None]:
    """Install fakes (or other instances) for the duration of the block."""
    with _lock:
        saved = dict(_state)
        _state.clear()
        if settings is not None:
            _state["settings"] = settings
        if executor is not None:
            _state["executor"] = executor
        if api is not None:
            _state["api"] = api
    try:
        yield
    finally:
        with _lock:
            _state.clear()
            _state.update(saved)
