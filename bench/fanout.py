"""Fan-out benchmark: Puppet agent runs across N lab nodes with bounded concurrency, against a sequential loop.

Two kinds of run, as the flows drive them: the provision check ``puppet agent -t --noop
--server_list=<replica>`` and the post-enable ``puppet agent -t``. For N = 1, 10 and 50 nodes, report the
fan-out time, its ratio to the single-node time, and its ratio to a sequential loop over the same nodes.

Every lab host shares the machine's two cores, and each simulated agent run is a Python process that costs
CPU (about 60-90 ms with its TLS requests), so N runs cannot finish together here the way N real nodes
would. To show what pe-ha itself adds, each size is also run as the *lab floor*: the same simulated
commands started directly inside the N hosts, all at once, without SSH or Prefect. ``pe-ha over floor``
is the fan-out's extra time per run over that floor.

    python -m bench.fanout [--sizes 1,10,50] [--limit 64] [--reuse-lab] [--keep-lab]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import lab_context, prefect_for_bench, table, write
from lab import core
from lab.config import LabConfig

R = "replica.lab.test"
GOAL_VS_SINGLE = 2.0  # issue #6: fan-out at N = 50 within 2x the single-node time


def lab_floor(hosts: list, argv: list[str]) -> float:
    """Seconds for ``argv`` started at once inside every host (no SSH, no Prefect): the lab's own cost."""
    env = ["env", "-i", "HOME=/root", "USER=root", "LOGNAME=root", "LANG=C.UTF-8", f"PATH={core.NODE_PATH}"]
    t0 = time.monotonic()
    procs = [subprocess.Popen(core.nsenter(h, *env, *argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for h in hosts]
    codes = [p.wait() for p in procs]
    if any(c not in (0, 2) for c in codes):
        raise RuntimeError(f"lab floor: agent runs exited {sorted(set(codes))}")
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1,10,50")
    p.add_argument("--limit", type=int, default=64,
                   help="concurrency (64: all 50 at once; the agent_concurrency setting's default is 16)")
    p.add_argument("--agent-seconds", type=float, default=1.0,
                   help="also measure with every simulated agent run taking this long (a real run takes 10-60 s)")
    p.add_argument("--reuse-lab", action="store_true")
    p.add_argument("--keep-lab", action="store_true")
    args = p.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    cfg = LabConfig(agents=max(sizes), sync_seconds=3, pdb_nodes=10)
    started = time.monotonic()
    if not args.reuse_lab:
        core.up(cfg, verbose=False)
    print(f"lab with {cfg.agents} agents up in {time.monotonic() - started:.1f} s")
    rows: list[dict] = []
    try:
        with prefect_for_bench(), lab_context() as ctx:
            settings = ctx.settings
            from prefect import flow
            from prefect.task_runners import ThreadPoolTaskRunner

            from flows.provision_replica import provision_replica
            from pe_ha import commands
            from tasks import agent

            limit = args.limit or settings.agent_concurrency
            provision_replica(sync_timeout_s=120)  # the replica must serve for --server_list=<replica>
            nodes = [n.name for n in settings.managed_nodes]

            @flow(name="bench-fanout", task_runner=ThreadPoolTaskRunner(max_workers=64))  # type: ignore[arg-type]
            def fan_out(hosts: list[str], noop: bool, server_list: list[str]) -> float:
                t0 = time.monotonic()
                agent.agent_runs(ctx, hosts, commands.agent_run(noop=noop, server_list=server_list), limit=limit)
                return time.monotonic() - t0

            @flow(name="bench-sequential")
            def sequential(hosts: list[str], noop: bool, server_list: list[str]) -> float:
                t0 = time.monotonic()
                for host in hosts:
                    agent.agent_run(ctx, host, commands.agent_run(noop=noop, server_list=server_list))
                return time.monotonic() - t0

            def slow_agents(seconds: float | None) -> None:
                for node in cfg.agent_hosts:
                    if seconds:
                        core.node_run(node, "pe-sim", "fault", "slow_command", '"agent"')
                        core.node_run(node, "pe-sim", "fault", "slow_seconds", str(seconds))
                    else:
                        core.node_run(node, "pe-sim", "fault", "clear")


            for kind, noop, server_list, seconds in (
                    ("agent -t --noop --server_list=replica", True, [R], None),
                    ("agent -t (post-enable)", False, [], None),
                    (f"agent -t, each run {args.agent_seconds:g} s", False, [], args.agent_seconds)):
                slow_agents(seconds)
                fan_out(nodes[:1], noop, server_list)  # warm the SSH connections
                single = fan_out(nodes[:1], noop, server_list)
                for n in sizes:
                    parallel = fan_out(nodes[:n], noop, server_list)
                    seq = sequential(nodes[:n], noop, server_list)
                    floor = lab_floor(cfg.agent_hosts[:n],
                                      list(commands.agent_run(noop=noop, server_list=server_list).argv))
                    rows.append({"run": kind, "N": n, "limit": limit, "fan_out_s": round(parallel, 2),
                                 "vs_single": round(parallel / single, 2), "sequential_s": round(seq, 2),
                                 "vs_sequential": round(parallel / seq, 2), "lab_floor_s": round(floor, 2),
                                 "floor_vs_single": round(floor / single, 2),
                                 "pe_ha_over_floor_ms_per_run": round(1000 * (parallel - floor) / n)})
                    print(rows[-1], flush=True)
    finally:
        if not args.keep_lab:
            core.down(verbose=False)
    columns = ["run", "N", "limit", "fan_out_s", "vs_single", "sequential_s", "vs_sequential", "lab_floor_s",
               "floor_vs_single", "pe_ha_over_floor_ms_per_run"]
    print(table(rows, columns))
    for row in rows:
        if row["N"] == 50:
            verdict = "met" if row["vs_single"] <= GOAL_VS_SINGLE else "MISSED"
            print(f"goal: {row['run']} at N=50 <= {GOAL_VS_SINGLE:g}x one node: {row['vs_single']}x -> {verdict} "
                  f"(the lab floor alone is {row['floor_vs_single']}x)")
    print(f"results: {write('fanout', {'rows': rows, 'goal_vs_single': GOAL_VS_SINGLE})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
