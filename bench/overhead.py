"""Overhead benchmark: the lab lifecycle's wall time against the time spent inside its remote commands.

Runs provision (with the parallel copy), enable (with the drill), promote, enable_ha_failover, reinitialize
and forget in-process against the lab, with an executor that records each remote command's interval.
Reports the wall time, the summed and the merged (overlaps counted once) remote time, the number of task
runs, and the orchestration time per task: (wall - merged remote time) / task runs. That residue also
holds the HTTPS API calls, PostgreSQL checks and the bounded sync waits' polling sleeps.

    python -m bench.overhead [--runs 3] [--reuse-lab] [--keep-lab]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from bench.common import lab_runtime, median, prefect_for_bench, table, write
from lab import core
from lab.config import LabConfig
from pe_ha.executor import FabricExecutor

M, R = "master.lab.test", "replica.lab.test"


class RecordingExecutor(FabricExecutor):
    intervals: list[tuple[float, float]] = []
    _lock = threading.Lock()

    def run(self, host, argv, **kw):
        started = time.monotonic()
        try:
            return super().run(host, argv, **kw)
        finally:
            with RecordingExecutor._lock:
                RecordingExecutor.intervals.append((started, time.monotonic()))


def merged_seconds(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
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
    from pe_ha import runtime

    RecordingExecutor.intervals = []
    started = time.monotonic()
    with lab_runtime() as settings:
        with runtime.use(settings=settings, executor=RecordingExecutor(settings, line_sink=lambda *a: None)):
            provision_replica(copy_puppetdb=True, sync_timeout_s=120)
            enable_replica(topology="mono", drill=True)
            core.outage(cfg.master, "drop")
            try:
                promote_replica(approve=True)
            finally:
                core.outage(cfg.master, "restore")
    with lab_runtime(master=settings.replica.model_dump(), replica=settings.master.model_dump()) as swapped:
        with runtime.use(settings=swapped, executor=RecordingExecutor(swapped, line_sink=lambda *a: None)):
            enable_ha_failover(host=M, topology="mono", replication_timeout_secs=120, promoted=R)
            reinitialize_replica(databases=["pe-rbac"], approve=True)
            core.outage(cfg.master, "drop")
            try:
                forget_replica(approve=True)
            finally:
                core.outage(cfg.master, "restore")
    wall = time.monotonic() - started
    return {"wall": wall, "commands": len(RecordingExecutor.intervals),
            "remote_sum": sum(b - a for a, b in RecordingExecutor.intervals),
            "remote_merged": merged_seconds(RecordingExecutor.intervals)}


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
                r["per_task_ms"] = 1000 * r["orchestration"] / max(r["tasks"], 1)
                results.append(r)
                print({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
    finally:
        if not args.keep_lab:
            core.down(verbose=False)
    row = {k: round(median([r[k] for r in results]), 2) for k in results[0]}
    row["remote_share"] = round(row["remote_merged"] / row["wall"], 2)
    print(table([row], ["wall", "commands", "remote_sum", "remote_merged", "remote_share", "tasks", "orchestration",
                        "per_task_ms"]))
    print(f"results: {write('overhead', {'runs': results, 'median': row})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
