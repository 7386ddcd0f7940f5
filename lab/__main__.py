"""`python -m lab up|down|status|outage|exec|fault|token|pdb` — control the pe-ha lab (a PE *simulator*)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from lab import core, pdbgen, realpuppet, realserver, tokens
from lab.config import LAB_DIR, LabConfig
from lab.profiles import DEFAULT_PROFILE, PROFILES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lab", description="pe-ha lab: hosts in network namespaces running a PE simulator")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="bring the lab up (clears stale state first)")
    up.add_argument("--agents", type=int, default=2)
    up.add_argument("--sync-seconds", type=float, default=6.0, help="simulated PuppetDB initial sync time")
    up.add_argument("--pdb-nodes", type=int, default=20, help="synthetic PuppetDB size (nodes) on the master")
    up.add_argument("--pe", default=DEFAULT_PROFILE, choices=sorted(PROFILES),
                    help="the PE version the lab simulates: its PostgreSQL major, PuppetDB schema and CLI flags")
    sub.add_parser("down", help="end every lab process and remove everything the lab added")
    sub.add_parser("status", help="show hosts, roles and outages")
    o = sub.add_parser("outage", help="cut a host off or limit its link")
    o.add_argument("host")
    o.add_argument("mode", choices=["drop", "reject", "restore", "slow", "fast"])
    o.add_argument("--rate", default="100mbit")
    e = sub.add_parser("exec", help="run a command inside a host (no SSH)")
    e.add_argument("host")
    e.add_argument("command", nargs=argparse.REMAINDER)
    f = sub.add_parser("fault", help="set a simulator fault switch on a host (or 'clear')")
    f.add_argument("host")
    f.add_argument("name")
    f.add_argument("value", nargs="?")
    t = sub.add_parser("token", help="issue a new admin token for pe-ha")
    t.add_argument("--lifetime", type=float, default=4 * 3600)
    g = sub.add_parser("pdb", help="regenerate the master's synthetic PuppetDB")
    g.add_argument("--nodes", type=int, required=True)
    args = p.parse_args(argv)

    if args.cmd == "up":
        cfg = LabConfig(agents=args.agents, sync_seconds=args.sync_seconds, pdb_nodes=args.pdb_nodes, pe=args.pe)
        core.up(cfg)
        p = cfg.profile
        pdb = "real PuppetDB, Puppet Server and agent (Debian's)" if p.real_puppetdb else "PuppetDB schema simulated"
        print(f"PE profile {cfg.pe} (PE simulated, {pdb}): PE {p.pe_version}, PostgreSQL {p.pg_major}, "
              f"PuppetDB {p.puppetdb_version} ({p.partitioning} partitions)")
        if p.real_puppetdb:
            took = realserver.up(cfg, args.pdb_nodes)
            print(f"real PuppetDB on the master: started in {took['start']:.1f} s, {args.pdb_nodes} nodes through its "
                  f"command API in {took['fill']:.1f} s (http://127.0.0.1:8080 inside the master)")
            print(f"real Puppet Server on the master and the replica (behind the simulator's 8140): started in "
                  f"{took['puppetserver']:.1f} s; the agents run Debian's puppet agent")
        elif args.pdb_nodes:
            print(f"synthetic PuppetDB: {args.pdb_nodes} nodes in {pdbgen.generate(cfg, args.pdb_nodes):.1f} s")
        print(f"settings for pe-ha: {LAB_DIR / 'peha.env'}")
        return 0
    if args.cmd == "down":
        core.down()
        return 0
    if not (LAB_DIR / "lab.json").exists():
        print("the lab is not up (make lab-up)", file=sys.stderr)
        return 1
    cfg = LabConfig.load()
    if args.cmd == "status":
        for row in core.status(cfg):
            print(json.dumps(row))
        return 0
    if args.cmd == "outage":
        print(core.outage(cfg.host(args.host), args.mode, args.rate))
        return 0
    if args.cmd == "exec":
        r = subprocess.run(core.nsenter(cfg.host(args.host), "env", "-i", "HOME=/root", "USER=root", "LANG=C.UTF-8",
                                        f"PATH={core.NODE_PATH}", *args.command))
        return r.returncode
    if args.cmd == "fault":
        rest = [args.name] + ([args.value] if args.value else [])
        return core.node_run(cfg.host(args.host), "pe-sim", "fault", *rest, check=False).returncode
    if args.cmd == "token":
        tokens.issue_admin_token(cfg, lifetime_s=args.lifetime)
        print(f"new admin token in {LAB_DIR / 'secrets' / 'token'}")
        return 0
    if args.cmd == "pdb":
        if cfg.profile.real_puppetdb:
            print(f"{realpuppet.fill(realpuppet.RealPuppetDB(cfg, cfg.master), args.nodes):.1f} s (through PuppetDB)")
        else:
            print(f"{pdbgen.generate(cfg, args.nodes):.1f} s")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
