"""Provision + copy benchmark: provision_replica with the PuppetDB copy running during the sync (as the guide
allows), against provision_replica followed by copy_puppetdb. Same lab, same synthetic PuppetDB, alternating
A, B, A, B; medians and the ratio.

    python -m bench.provision_copy [--nodes 300] [--runs 2] [--sync-seconds 20]
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.common import lab_context, median, prefect_for_bench, table, write
from lab import core, pdbgen
from lab.config import LabConfig


def parallel() -> float:
    from flows.provision_replica import provision_replica

    started = time.monotonic()
    provision_replica(copy_puppetdb=True, sync_timeout_s=600)
    return time.monotonic() - started


def sequential() -> float:
    from flows.copy_puppetdb import copy_puppetdb
    from flows.provision_replica import provision_replica

    started = time.monotonic()
    provision_replica(sync_timeout_s=600)
    copy_puppetdb(approve=True)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=300)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--sync-seconds", type=int, default=20, help="how long the simulated replica sync takes")
    args = p.parse_args(argv)
    cfg = LabConfig(agents=1, sync_seconds=args.sync_seconds, pdb_nodes=args.nodes)
    times: dict[str, list[float]] = {"provision with parallel copy": [], "provision, then copy": []}
    try:
        with prefect_for_bench():
            for i in range(args.runs):
                for name, method in (("provision with parallel copy", parallel), ("provision, then copy", sequential)):
                    core.up(cfg, verbose=False)  # a fresh, unprovisioned replica each time
                    pdbgen.generate(cfg, args.nodes)
                    with lab_context():
                        times[name].append(method())
                    print(f"run {i + 1} {name}: {times[name][-1]:.1f} s", flush=True)
    finally:
        core.down(verbose=False)
    base = median(times["provision, then copy"])
    rows = [{"method": k, "runs": len(v), "median_s": round(median(v), 1), "ratio": round(median(v) / base, 2)}
            for k, v in times.items()]
    print(table(rows, ["method", "runs", "median_s", "ratio"]))
    print(f"results: {write('provision-copy', {'nodes': args.nodes, 'sync_seconds': args.sync_seconds, 'runs': times})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
