"""Overhead benchmark: the lab lifecycle's wall time against the time spent in remote operations.

Runs provision (with the parallel copy), enable (with the drill), promote, enable_ha_failover, reinitialize
and forget in-process against the lab, recording the interval of every remote operation, by kind:

- ``ssh``: each command on a PE node (an executor that records, plugged in through ``context.using``);
- ``https``: each PE API request (a recording ``PEApi``, plugged in the same way);
- ``postgres``: each PostgreSQL session of the copy's checks (``tasks.puppetdb.connect``, wrapped here);
- ``tcp``: each TCP probe from the worker to a lab address (``socket.create_connection``, wrapped here for
  198.18.0.0/24 only: Prefect's own API connections stay orchestration).

Orchestration is the wall time outside every remote operation (overlaps counted once): Prefect's task and
flow bookkeeping, the flows' own Python, and the bounded waits' polling sleeps. Reported too, as before: the
same figure counting SSH commands only. Per task: orchestration / task runs.

    python -m bench.overhead [--runs 3] [--reuse-lab] [--keep-lab]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator

from bench.common import lab_context, median, prefect_for_bench, table, write
from lab import core
from lab.config import LabConfig
from pe_ha.pe_api import PEApi
from pe_ha.ssh import FabricExecutor

M, R = "master.lab.test", "replica.lab.test"
GOAL_SHARE = 0.05  # issue #6: orchestration <= 5 % of the lifecycle's wall time

_lock = threading.Lock()
intervals: list[tuple[str, float, float]] = []  # (kind, start, end)


def _record(kind: str, started: float) -> None:
    with _lock:
        intervals.append((kind, started, time.monotonic()))


class RecordingExecutor(FabricExecutor):
    def run(self, host, argv, **kw):
        started = time.monotonic()
        try:
            return super().run(host, argv, **kw)
        finally:
            _record("ssh", started)

    def open_session(self, host, argv, **kw):
        """A psql session on a node (pe-ha's PostgreSQL reads): recorded from its start to its close."""
        started = time.monotonic()
        session = super().open_session(host, argv, **kw)
        close = session.close

        def recorded_close() -> None:
            try:
                close()
            finally:
                _record("postgres", started)

        session.close = recorded_close  # type: ignore[method-assign]
        return session


class RecordingApi(PEApi):
    def request(self, *args, **kw):
        started = time.monotonic()
        try:
            return super().request(*args, **kw)
        finally:
            _record("https", started)


@contextlib.contextmanager
def recording_probes() -> Iterator[None]:
    """Record the worker's TCP probes to lab addresses for the block (psql sessions are the executor's)."""
    original_tcp = socket.create_connection

    def create_connection(address, *args, **kw):
        if not str(address[0]).startswith("198.18.0."):
            return original_tcp(address, *args, **kw)
        started = time.monotonic()
        try:
            return original_tcp(address, *args, **kw)
        finally:
            _record("tcp", started)

    socket.create_connection = create_connection
    try:
        yield
    finally:
        socket.create_connection = original_tcp


def merged_seconds(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def lifecycle(cfg: LabConfig) -> dict:
    from flows.enable_ha_failover import enable_ha_failover
    from flows.enable_replica import enable_replica
    from flows.forget_replica import forget_replica
    from flows.promote_replica import promote_replica
    from flows.provision_replica import provision_replica
    from flows.reinitialize_replica import reinitialize_replica
    from pe_ha import context

    intervals.clear()
    started = time.monotonic()
    with recording_probes(), lab_context() as ctx:
        settings = ctx.settings
        with context.using(settings=settings, executor=RecordingExecutor(settings, line_sink=lambda *a: None),
                         api=RecordingApi(settings)):
            provision_replica(copy_puppetdb=True, sync_timeout_s=120)
            enable_replica(topology="mono", drill=True)
            core.outage(cfg.master, "drop")
            try:
                promote_replica(approve=True)
            finally:
                core.outage(cfg.master, "restore")
    with recording_probes(), lab_context(master=settings.replica.model_dump(),
                                         replica=settings.master.model_dump()) as swapped_ctx:
        swapped = swapped_ctx.settings
        with context.using(settings=swapped, executor=RecordingExecutor(swapped, line_sink=lambda *a: None),
                         api=RecordingApi(swapped)):
            enable_ha_failover(host=M, topology="mono", replication_timeout_secs=120, promoted=R)
            reinitialize_replica(databases=["pe-rbac"], approve=True)
            core.outage(cfg.master, "drop")
            try:
                forget_replica(approve=True)
            finally:
                core.outage(cfg.master, "restore")
    wall = time.monotonic() - started
    result: dict = {"wall": wall}
    for kind in ("ssh", "https", "postgres", "tcp"):
        spans = [(a, b) for k, a, b in intervals if k == kind]
        result[f"{kind}_ops"] = len(spans)
        result[f"{kind}_merged"] = merged_seconds(spans)
    result["remote_merged"] = merged_seconds([(a, b) for _, a, b in intervals])
    return result


def count_task_runs(since: float) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStartTime
    from prefect.types import DateTime

    count = 0
    with get_client(sync_client=True) as client:
        while True:  # the API serves at most 200 per call
            page = client.read_task_runs(task_run_filter=TaskRunFilter(
                start_time=TaskRunFilterStartTime(after_=DateTime.fromtimestamp(since))), limit=200, offset=count)
            count += len(page)
            if len(page) < 200:
                return count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--reuse-lab", action="store_true")
    p.add_argument("--keep-lab", action="store_true")
    args = p.parse_args(argv)
    cfg = LabConfig(agents=2, sync_seconds=3, pdb_nodes=10)
    results = []
    try:
        with prefect_for_bench():
            for i in range(args.runs):
                if i or not args.reuse_lab:
                    core.up(cfg, verbose=False)
                since = time.time()
                r = lifecycle(cfg)
                r["tasks"] = count_task_runs(since)
                r["orchestration"] = r["wall"] - r["remote_merged"]
                r["share"] = r["orchestration"] / r["wall"]
                r["per_task_ms"] = 1000 * r["orchestration"] / max(r["tasks"], 1)
                r["share_ssh_only"] = (r["wall"] - r["ssh_merged"]) / r["wall"]
                results.append(r)
                print({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
    finally:
        if not args.keep_lab:
            core.down(verbose=False)
    row = {k: round(median([r[k] for r in results]), 3) for k in results[0]}
    print(table([row], ["wall", "ssh_ops", "https_ops", "postgres_ops", "tcp_ops", "ssh_merged", "remote_merged",
                        "tasks", "orchestration", "share", "per_task_ms", "share_ssh_only"]))
    met = row["share"] <= GOAL_SHARE
    print(f"goal: orchestration <= {GOAL_SHARE:.0%} of the wall time: {row['share']:.1%} -> "
          f"{'met' if met else 'MISSED'}")
    print(f"results: {write('overhead', {'runs': results, 'median': row, 'goal_share': GOAL_SHARE, 'met': met})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
