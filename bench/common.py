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


def _rss_kib(pids: list[str]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            continue  # ended between the listing and the read
    return total


class PeakSampler:
    """Samples, every ``interval_s`` while a run lasts, the resident memory of this process (pe-ha's worker in the
    benchmark) and of each named lab host's PostgreSQL processes; keeps each one's peak, in MiB."""

    def __init__(self, hosts: dict, interval_s: float = 0.25) -> None:
        import threading

        self.hosts = hosts  # name -> lab Host
        self.interval_s = interval_s
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _postgres_pids(self, host) -> list[str]:
        import subprocess

        pids = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True).stdout.split()
        return [p for p in pids if _comm(p) in ("postgres", "postmaster")]

    def _sample(self) -> None:
        now = {"worker": _rss_kib([str(os.getpid())]) / 1024}
        for name, host in self.hosts.items():
            now[f"{name} postgres"] = _rss_kib(self._postgres_pids(host)) / 1024
        for key, value in now.items():
            self.peaks[key] = max(self.peaks.get(key, 0.0), value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> PeakSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def link_bytes(host) -> int:
    """Bytes the lab host has sent and received on its one link (``eth0`` in its namespace)."""
    import subprocess

    out = subprocess.run(["ip", "netns", "exec", host.netns, "cat", "/sys/class/net/eth0/statistics/tx_bytes",
                          "/sys/class/net/eth0/statistics/rx_bytes"], capture_output=True, text=True, check=True).stdout
    return sum(int(x) for x in out.split())
