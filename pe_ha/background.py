"""A function in a thread of its own that keeps the caller's context (a Prefect run's logger sees it)."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable


class Background:
    """``fn`` in a thread of its own, in the caller's context (its log lines reach the same run); ``result()``
    waits for it and raises what it raised."""

    def __init__(self, fn: Callable[[], object], name: str) -> None:
        self._outcome: list[object] = []
        self._error: list[BaseException] = []
        context = contextvars.copy_context()

        def run() -> None:
            try:
                self._outcome.append(context.run(fn))
            except BaseException as exc:  # handed to the thread that calls result()
                self._error.append(exc)

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    def wait(self, timeout_s: float) -> bool:
        """Wait at most ``timeout_s`` for the function to end; True when it has."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def result(self) -> object:
        self._thread.join()
        if self._error:
            raise self._error[0]
        return self._outcome[0] if self._outcome else None
