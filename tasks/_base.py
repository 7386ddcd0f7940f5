"""Shared task options: explicit retries, never cached, retried only for transient errors."""

from __future__ import annotations

import logging
from typing import Any

from prefect.cache_policies import NO_CACHE

from pe_ha.retry import retry_if_transient

# Side effects are never served from a cache; only transient errors are retried.
SIDE_EFFECT: dict[str, Any] = {"cache_policy": NO_CACHE, "retries": 0}
READ: dict[str, Any] = {"cache_policy": NO_CACHE, "retries": 3, "retry_delay_seconds": [1, 2, 4],
                        "retry_condition_fn": retry_if_transient}
RETRY_CONNECT: dict[str, Any] = {"cache_policy": NO_CACHE, "retries": 2, "retry_delay_seconds": [2, 5],
                                 "retry_condition_fn": retry_if_transient}


def logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        from prefect.logging import get_run_logger

        return get_run_logger()
    except Exception:  # outside a run (unit tests calling .fn)
        return logging.getLogger("pe_ha")
