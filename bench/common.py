"""Shared helpers for the benchmarks: run flows against the lab under a Prefect test harness, and record results."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def prefect_for_bench():
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        from deployments.setup import ensure_lock

        ensure_lock("lab")
        yield


@contextlib.contextmanager
def lab_context(**overrides):
    """A run context on the lab's settings (with ``overrides``), also given to the flows run inside."""
    from lab.core import lab_env
    from pe_ha import context
    from pe_ha.settings import load_settings

    saved = dict(os.environ)
    os.environ.update(lab_env())
    try:
        settings = load_settings(_env_file=None, **overrides)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    with context.using(settings=settings) as ctx:
        yield ctx


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    lines = [" | ".join(c.ljust(widths[c]) for c in columns), "-+-".join("-" * widths[c] for c in columns)]
    lines += [" | ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)
