"""`make demo`: the lab, a real Prefect server, deployments from prefect.yaml and a worker; then the whole
HA lifecycle started through Prefect's REST API, with approvals given through the API as an operator would.

    python -m lab.demo [--keep] [--pdb-nodes N] [--pe PROFILE]

``--pe 2021.7-real`` runs it with real PuppetDB on master and replica (``make demo PE=2021.7-real``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from lab import core, pdbgen, realserver
from lab.config import LabConfig
from lab.profiles import DEFAULT_PROFILE, PROFILES
from lab.stack import ROOT, PrefectStack, WebhookReceiver

M, R = "master.lab.test", "replica.lab.test"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="pe-ha demo against the lab (a PE simulator)")
    p.add_argument("--keep", action="store_true", help="leave the lab and Prefect up to explore the UI")
    p.add_argument("--pdb-nodes", type=int, default=100)
    p.add_argument("--port", type=int, default=4200)
    p.add_argument("--pe", default=DEFAULT_PROFILE, choices=sorted(PROFILES), help="the lab's PE profile")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    print("== 1. lab up (hosts in network namespaces running a PE *simulator*)")
    cfg = LabConfig(agents=2, sync_seconds=5, pdb_nodes=args.pdb_nodes, pe=args.pe)
    core.up(cfg)
    if cfg.profile.real_puppetdb:
        took = realserver.up(cfg, args.pdb_nodes)
        print(f"   real PuppetDB 7.12.1 on the master: started in {took['start']:.1f} s, {args.pdb_nodes} nodes "
              f"through its command API in {took['fill']:.1f} s; real Puppet Server 7.9.5 on master and replica "
              f"in {took['puppetserver']:.1f} s; the agents run Debian's puppet agent 7.23.0")
    else:
        print(f"   synthetic PuppetDB: {args.pdb_nodes} nodes in {pdbgen.generate(cfg, args.pdb_nodes):.1f} s")
    env = core.lab_env()
    env["PEHA_HEALTH_INTERVAL_S"] = "300"
    home = ROOT / ".prefect" / "demo"
    # A clean server each time: runs left scheduled by an earlier demo would otherwise start late and alert.
    shutil.rmtree(home, ignore_errors=True)
    stack = PrefectStack(home=home, port=args.port, extra_env=env)
    hook = WebhookReceiver().start()
    try:
        print("== 2. Prefect server (SQLite, 127.0.0.1 only, telemetry off)")
        print(f"   up in {stack.start_server():.1f} s at {stack.ui}")
        print("== 3. work pool, lock, webhook block, automations; deployments from prefect.yaml; a worker")
        stack.setup_and_deploy("lab", hook.url)
        stack.start_worker("worker-1")

        print("== 4. the HA lifecycle, through the API")
        rows = lifecycle(stack, cfg)
        total = time.monotonic() - t0
        print("\n== 5. runs")
        print(f"{'deployment':<22} {'run':<44} {'state':<10} {'seconds':>8}")
        for r in rows:
            print(f"{r['deployment']:<22} {r['run']:<44} {r['state']:<10} {r['seconds']:>8}")
        print(f"\ndemo total: {total:.1f} s; alerts received by the local webhook: {len(hook.received)}")
        print(f"Prefect UI: {stack.ui}")
        ok = all(r["state"] == "Completed" for r in rows)
        if args.keep:
            print("--keep: the lab and Prefect stay up. Stop them with: make lab-down; pkill -f 'prefect (server|worker)'")
            return 0 if ok else 1
        return 0 if ok else 1
    finally:
        if not args.keep:
            stack.stop()
            hook.stop()
            core.down()


def lifecycle(stack: PrefectStack, cfg: LabConfig, *, verbose: bool = True) -> list[dict]:
    """The whole HA lifecycle against the lab, every run started through the REST API; one row per run."""
    rows: list[dict] = []

    def say(text: str) -> None:
        if verbose:
            print(text, flush=True)

    def run(flow: str, params: dict | None = None, approve_as: str | None = None, timeout_s: float = 600) -> dict:
        started = time.monotonic()
        deployment = f"{flow}/lab"
        fr = stack.create_run(flow, "lab", params)
        say(f"   -> {deployment} {params or ''} (run {fr['name']})")
        if approve_as:
            stack.wait(fr["id"], timeout_s, until={"PAUSED", "COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
            answer = stack.resume(fr["id"], {"approve": True, "operator": approve_as, "comment": "demo"})
            say(f"      approval through the API: HTTP {answer['http']} {answer.get('status')}")
        final = stack.wait(fr["id"], timeout_s)
        row = {"deployment": deployment, "run": final["name"], "state": final["state"]["name"],
               "seconds": round(time.monotonic() - started, 1), "id": fr["id"],
               "message": final["state"].get("message") or ""}
        rows.append(row)
        say(f"      {row['state']} in {row['seconds']} s")
        return final

    # Before provisioning the replica serves nothing: report it, without failing the run.
    run("verify-health", {"installation": "lab", "fail_on_degraded": False})
    # The manual PuppetDB copy beside provisioning exists in PE's guide up to 2019.5 only; on later versions the
    # copy runs on its own after provisioning (reseeding the replica's pe-puppetdb), approved by an operator.
    beside = cfg.profile.pe_line <= (2019, 5)
    run("provision-replica", {"copy_puppetdb": beside, "sync_timeout_s": 300})
    if not beside:
        run("copy-puppetdb", {}, approve_as="demo-operator")
    run("verify-health", {"installation": "lab"})
    run("enable-replica", {"topology": "mono", "drill": True})
    say("   (cutting the master off: it is now 'permanently offline')")
    core.outage(cfg.master, "drop")
    try:
        run("promote-replica", {}, approve_as="demo-operator")
    finally:
        core.outage(cfg.master, "restore")
    run("enable-ha-failover", {"host": M, "topology": "mono", "replication_timeout_secs": 300,
                                                      "promoted": R})
    run("verify-health", {"installation": "lab", "master": R, "replica": M})
    run("reinitialize-replica", {"databases": ["pe-rbac"], "replica": M, "master": R},
        approve_as="demo-operator")
    say("   (the new replica is destroyed for good: cutting it off)")
    core.outage(cfg.master, "drop")
    try:
        run("forget-replica", {"replica": M, "master": R}, approve_as="demo-operator")
    finally:
        core.outage(cfg.master, "restore")
    return rows


if __name__ == "__main__":
    sys.exit(main())
