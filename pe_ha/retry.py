"""Retry policy shared by every task: retry only what can heal by itself."""

from __future__ import annotations

from typing import Any

from pe_ha.errors import is_retryable


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: connection errors, timeouts and 5xx retry; 401/403, refusals and
    failed preconditions never do."""
    try:
        state.result()
    except Exception as exc:  # the task's own exception, re-raised by result()
        return is_retryable(exc)
    return False
