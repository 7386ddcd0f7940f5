"""Forecast accuracy: what each procedure's forecast said against what the same run then took, step by step, on
the lab. Each procedure runs twice on an installation of its own: first with no past runs (the model's forecast),
then once that run is its history (the forecast corrected by it). For each size of the master's pe-puppetdb and
each link:

- provision_replica with the PuppetDB copy during the sync (PE 2019.5's guide), the copy's steps included;
- copy_puppetdb alone, on a provisioned replica, by each method;
- enable_replica.

    python -m bench.forecast [--nodes 250,1000] [--links unlimited,100mbit] [--pe 2019.5] [--sync-seconds 20]

The figures come from what each run records (flows/_history.py): per step, the seconds it took and the forecast
it was told. Provision and enable wait on PE's own work, which the lab simulates (its sync takes --sync-seconds);
their model is PE's guide's "10-30 minutes", so their first rows show that the guide's range is wide, not that it
is right. Only the copy's steps run real PostgreSQL work here.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import uuid
from pathlib import Path

from bench.common import lab_context, prefect_for_bench, table, write
from lab import core, pdbgen
from lab.config import LabConfig

SNAPSHOTS = Path("/var/tmp/pe-ha-bench-snapshots")  # each size's database, generated once per invocation
COLUMNS = ["nodes", "link", "procedure", "round", "step", "forecast_s", "low_s", "high_s", "actual_s", "ratio",
           "in_range", "within_25pct"]


def _timings(procedure: str, installation: str) -> list[dict]:
    """The latest run's own record of its steps: seconds taken and the forecast it was told."""
    from flows._history import past_runs  # after prefect_for_bench has chosen the server

    runs = past_runs(installation, procedure, limit=1)
    return runs[0] if runs else []


def _row(base: dict, step: str, forecast: float, low: float, high: float, actual: float) -> dict:
    return {**base, "step": step, "forecast_s": round(forecast, 1), "low_s": round(low, 1), "high_s": round(high, 1),
            "actual_s": round(actual, 1), "ratio": round(actual / forecast, 2) if forecast else None,
            "in_range": low <= actual <= high,
            "within_25pct": abs(forecast - actual) <= 0.25 * actual if base["round"] == "history" else None}


def _measured(procedure: str, flow, params: dict, installation: str, base: dict) -> list[dict]:
    """Run the procedure; one row per step it forecast and finished, then its total."""
    with lab_context(installation=installation):
        flow(**params)
    own = [_row(base, t["step"], t["forecast_s"], t["forecast_low_s"], t["forecast_high_s"], t["seconds"])
           for t in _timings(procedure, installation)]
    # the copy during provisioning: its steps, inside provisioning's one copy-puppetdb step
    inner = [_row(base, f"copy-puppetdb: {t['step']}", t["forecast_s"], t["forecast_low_s"], t["forecast_high_s"],
                  t["seconds"]) for t in (_timings("copy-puppetdb", installation) if params.get("copy_puppetdb") else [])]
    total = _row(base, "(total of the steps)", *(sum(r[k] for r in own) for k in ("forecast_s", "low_s", "high_s",
                                                                                "actual_s")))
    return own + inner + [total]


def _fresh(cfg: LabConfig, link: str) -> None:
    """The lab as generated for this size (from its snapshot after the first time), the link set."""
    core.up(cfg, verbose=False, seed=lambda c: pdbgen.generate(c, c.pdb_nodes), snapshots=SNAPSHOTS, spares=False)
    for host in (cfg.master, cfg.replica):
        core.outage(host, "fast" if link == "unlimited" else "slow", rate=link)


def _installation(name: str) -> str:
    from deployments.setup import ensure_lock

    installation = f"forecast-{name}-{uuid.uuid4().hex[:6]}"  # no other run is its history
    ensure_lock(installation)
    return installation


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", default="250,1000")
    p.add_argument("--links", default="unlimited,100mbit")
    p.add_argument("--methods", default="fast,documented")
    p.add_argument("--pe", default="2019.5", help="the lab's PE profile: 2019.5 is the last that documents the copy "
                   "during provisioning")
    p.add_argument("--sync-seconds", type=int, default=20, help="how long the simulated replica sync takes")
    args = p.parse_args(argv)
    from flows.copy_puppetdb import copy_puppetdb
    from flows.enable_replica import enable_replica
    from flows.provision_replica import provision_replica

    def provision(installation: str) -> None:
        with lab_context(installation=installation):
            provision_replica(sync_timeout_s=600)

    rows: list[dict] = []
    try:
        with prefect_for_bench():
            for nodes in (int(n) for n in args.nodes.split(",")):
                cfg = LabConfig(agents=1, sync_seconds=args.sync_seconds, pdb_nodes=nodes, pe=args.pe)
                for link in args.links.split(","):
                    names = {n: _installation(n) for n in ("provision", "enable", *args.methods.split(","))}
                    for round_ in ("model", "history"):
                        base = {"nodes": nodes, "link": link, "round": round_}
                        _fresh(cfg, link)
                        rows += _measured("provision-replica", provision_replica,
                                          {"copy_puppetdb": True, "sync_timeout_s": 600}, names["provision"],
                                          {**base, "procedure": "provision with copy"})
                        _fresh(cfg, link)
                        provision(_installation("setup"))  # not measured: no history for the measured ones
                        for method in args.methods.split(","):
                            rows += _measured("copy-puppetdb", copy_puppetdb, {"method": method, "approve": True},
                                              names[method], {**base, "procedure": f"copy ({method})"})
                        rows += _measured("enable-replica", enable_replica, {"topology": "mono"}, names["enable"],
                                          {**base, "procedure": "enable"})
                    print(table([r for r in rows if (r["nodes"], r["link"]) == (nodes, link)], COLUMNS), flush=True)
    finally:
        core.down(verbose=False)
        shutil.rmtree(SNAPSHOTS, ignore_errors=True)
    print(table(rows, COLUMNS))
    totals = [r for r in rows if r["step"] == "(total of the steps)"]
    print(f"totals in their range: {sum(r['in_range'] for r in totals)} of {len(totals)}; history rounds within "
          f"25 %: {sum(bool(r['within_25pct']) for r in totals if r['round'] == 'history')} of "
          f"{sum(r['round'] == 'history' for r in totals)}")
    print(f"results: {write('forecast', {'args': vars(args), 'rows': rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
