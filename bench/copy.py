"""Copy benchmark: pe-ha's fast copy against the guide's documented procedure (a plain script of its commands),
and pgcopydb when installed; same synthetic PuppetDB, same run, alternating, with medians and ratios.

    python -m bench.copy --nodes 1000 --runs 3 --links unlimited,100mbit --cpus shared,split
    python -m bench.copy --nodes 200 --runs 1 --links unlimited     # the CI smoke test: checks equality only

CPU models: ``shared`` runs every lab host on every core (one machine: the master's dump and the replica's restore
compete); ``split`` pins the master's processes to half the cores and the replica's to the other half
(``taskset``), as two machines would run them. Each run's rows name their model.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time

from bench.common import PeakSampler, lab_context, link_bytes, median, prefect_for_bench, table, write
from lab import core, inspect, pdbgen, realpuppet
from lab.config import LAB_DIR, LabConfig
from lab.profiles import DEFAULT_PROFILE, PROFILES

SSH = ["ssh", "-F", str(LAB_DIR / "ssh" / "ssh_config")]
DUMP = "/var/tmp/bench-doc.dump"
CHECK_TABLES = ("certnames", "factsets", "catalog_resources", "reports", "edges", "resource_params_cache")


def ssh(host: str, script: str, timeout: float = 3600) -> float:
    started = time.monotonic()
    subprocess.run([*SSH, host, script], check=True, capture_output=True, text=True, timeout=timeout)
    return time.monotonic() - started


def documented(cfg: LabConfig) -> dict:
    """The guide's commands, as an operator would run them (compress 3, scp, pg_restore --clean --jobs=<cpus>)."""
    pg = "runuser -u postgres -- /opt/puppetlabs/server/bin"
    t_dump = ssh("master", f"{pg}/pg_dump --format=custom --compress=3 --file={DUMP} --dbname=pe-puppetdb")
    t_scp = ssh("master", f"scp -q {DUMP} replica.lab.test:{DUMP}")
    started = time.monotonic()
    ssh("replica", "puppet resource service puppet ensure=stopped >/dev/null; "
                   "puppet resource service pe-puppetdb ensure=stopped >/dev/null; "
                   f"{pg}/pg_restore --clean --jobs=$(nproc) --dbname=pe-puppetdb {DUMP} 2>/dev/null; "
                   "puppet resource service puppet ensure=running >/dev/null; "
                   "puppet resource service pe-puppetdb ensure=running >/dev/null; true")
    t_restore = time.monotonic() - started
    t_agent = ssh("replica", "puppet agent -t >/dev/null; true")  # the guide's last step
    ssh("master", f"rm -f {DUMP}")
    ssh("replica", f"rm -f {DUMP}")
    return {"total": t_dump + t_scp + t_restore + t_agent, "dump": t_dump, "transfer": t_scp, "restore": t_restore,
            "agent": t_agent, "target_unusable": t_restore}


def pe_ha_fast(cfg: LabConfig) -> dict:
    from flows.copy_puppetdb import copy_puppetdb

    started = time.monotonic()
    result = copy_puppetdb(method="fast", approve=True)
    total = time.monotonic() - started
    return {"total": total, "target_unusable": result["target_stopped_seconds"], "compress": result["compress"],
            **{k: v for k, v in result["timings"].items()}}


def pe_ha_documented(cfg: LabConfig) -> dict:
    from flows.copy_puppetdb import copy_puppetdb

    started = time.monotonic()
    result = copy_puppetdb(method="documented", approve=True)
    return {"total": time.monotonic() - started, "target_unusable": result["target_stopped_seconds"]}


def pgcopydb(cfg: LabConfig) -> dict:
    """pgcopydb clone from the master's PostgreSQL into the replica's (it drops the target's tables first)."""
    pw = (LAB_DIR / "secrets" / "pg_superuser").read_text().strip()
    work = LAB_DIR / "pgcopydb-work"
    shutil.rmtree(work, ignore_errors=True)
    started = time.monotonic()
    subprocess.run(["pgcopydb", "clone", "--source", f"postgres://postgres:{pw}@{cfg.master.address}/pe-puppetdb",
                    "--target", f"postgres://postgres:{pw}@{cfg.replica.address}/pe-puppetdb", "--dir", str(work),
                    "--drop-if-exists", "--table-jobs", "2", "--index-jobs", "2", "--no-owner"],
                   check=True, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=3600)
    total = time.monotonic() - started
    return {"total": total, "target_unusable": total}


def full_fingerprint(settings, host: str) -> str:
    """Row counts of every table, md5 of the ordered rows of the big tables, and every sequence's value and
    is_called, the partition inventory, owners, the database ACL and the extensions (the benchmark's full check)."""
    from tasks.puppetdb import catalog_inventory

    entry = settings.host(host)
    digest = hashlib.sha256()
    with inspect.connect(entry.address) as conn:
        tables = [r[0] for r in conn.execute("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                             "WHERE nspname = 'public' AND relkind IN ('r', 'p') ORDER BY 1")]
        for t in tables:
            digest.update(f"{t}:{conn.execute(f'SELECT count(*) FROM ONLY public.{t}').fetchone()[0]};".encode())
        for key, value in sorted(catalog_inventory(inspect.Rows(conn)).items()):
            digest.update(f"{key}={value};".encode())
        for t in CHECK_TABLES:
            cols = [r[0] for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
                "AND attname <> 'id' ORDER BY attnum", (f"public.{t}",))]
            order = ", ".join(f'"{c}"' for c in cols)
            row = conn.execute(f"SELECT md5(string_agg(x::text, '' ORDER BY x)) FROM (SELECT ({order}) AS x FROM public.{t}) s"
                               ).fetchone()
            digest.update(f"{t}:{row[0]};".encode())
        for name in ("indexes", "constraints"):
            q = ("SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'" if name == "indexes" else
                 "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE nspname = 'public'")
            digest.update(f"{name}:{conn.execute(q).fetchone()[0]};".encode())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", default="1000", help="sizes, in nodes, comma-separated (e.g. 250,1000,4000)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--links", default="unlimited,100mbit")
    p.add_argument("--cpus", default="shared,split", help="CPU models, in order: shared, split (see the docstring)")
    p.add_argument("--methods", default="documented,pe-ha-fast,pgcopydb")
    p.add_argument("--keep-lab", action="store_true")
    p.add_argument("--pe", default=DEFAULT_PROFILE, choices=sorted(PROFILES), help="the lab's PE profile")
    p.add_argument("--reuse-lab", action="store_true", help="use the lab that is up (the CI smoke test does)")
    p.add_argument("--data", choices=("synthetic", "puppetdb"), default="synthetic",
                   help="synthetic rows (lab/pdbgen.py), or data PuppetDB writes itself (needs --pe 2021.7-real)")
    p.add_argument("--shape", default="", help="RESOURCES,REPORTS per node (default: the generator's own; "
                   "the same shape for both kinds of data makes them comparable)")
    args = p.parse_args(argv)
    if args.data == "puppetdb" and not PROFILES[args.pe].real_puppetdb:
        p.error(f"--data puppetdb needs a profile with real PuppetDB (--pe 2021.7-real), not {args.pe}")
    try:
        resources, reports = (int(x) for x in args.shape.split(",")) if args.shape else (
            pdbgen.RESOURCES_PER_NODE, pdbgen.REPORTS_PER_NODE)
    except ValueError:
        p.error(f"--shape {args.shape!r}: give RESOURCES,REPORTS per node, e.g. 200,5")
    shape = {"resources": resources, "reports": reports}
    methods = {"documented": documented, "pe-ha-fast": pe_ha_fast, "pe-ha-documented": pe_ha_documented,
               "pgcopydb": pgcopydb}
    chosen = [m for m in args.methods.split(",") if m]
    models = core.cpu_models(os.cpu_count() or 1)
    cpu_models = [m for m in args.cpus.split(",") if m]
    unknown = [m for m in cpu_models if m not in models]
    if unknown:
        p.error(f"--cpus {','.join(unknown)}: this machine offers {', '.join(models)}")
    try:
        sizes = [int(n) for n in args.nodes.split(",") if n]
    except ValueError:
        p.error(f"--nodes {args.nodes!r}: give node counts, comma-separated")
    if "pgcopydb" in chosen and shutil.which("pgcopydb") is None:
        print("pgcopydb is not installed (apt-get install pgcopydb): left out")
        chosen.remove("pgcopydb")
    if args.reuse_lab:
        cfg = LabConfig.load()
    else:
        cfg = LabConfig(agents=1, sync_seconds=1, pdb_nodes=0 if args.data == "puppetdb" else sizes[0], pe=args.pe)
        print("lab up ...", flush=True)
        core.up(cfg, verbose=False)
    results: list[dict] = []
    databases: dict[int, dict] = {}
    ok = True
    try:
        harness = contextlib.nullcontext() if args.reuse_lab else prefect_for_bench()
        with harness, lab_context() as ctx:
            for nodes in sizes:
                # One database per size, generated once and copied by every run of this invocation.
                if args.data == "puppetdb":  # written by the real PuppetDB, through its command API
                    gen = realpuppet.seed(cfg, nodes, reports=shape["reports"], resources=shape["resources"])["fill"]
                    realpuppet.stop_all(cfg)  # the copy's subject is the database; the JVM would only compete
                else:
                    gen = pdbgen.generate(cfg, nodes, **shape)
                size = database_size()
                databases[nodes] = {"bytes": size, "generated_s": round(gen, 1), "data": args.data, **shape}
                print(f"PE profile {cfg.pe} (PostgreSQL {cfg.profile.pg_major}, PuppetDB "
                      f"{cfg.profile.puppetdb_version}); {nodes} nodes of {shape['resources']} resources and "
                      f"{shape['reports']} reports, {'written by PuppetDB' if args.data == 'puppetdb' else 'synthetic'}; "
                      f"pe-puppetdb {size / 1e9:.2f} GB ({gen:.0f} s to write)", flush=True)
                rows, verified = measure(ctx.settings, cfg, methods, chosen, models, cpu_models, args, nodes)
                results += rows
                ok &= verified
    finally:
        if not args.keep_lab and not args.reuse_lab:
            core.down(verbose=False)
    summary = summarize(results, sizes, cpu_models, args.links.split(","), chosen)
    print()
    print(table(summary, ["nodes", "cpus", "link", "method", "runs", "median_s", "ratio_vs_documented",
                          "target_unusable_s", "unusable_ratio", "peak_worker_mib", "wire_mb", "verified"]))
    goals = copy_goals(summary)
    for line in goals:
        print(line)
    path = write("copy", {"pe_profile": cfg.pe, "pg_major": cfg.profile.pg_major, "data": args.data, "sizes": databases,
                          "cpu_models": {m: models[m] for m in cpu_models}, "runs": results,
                          "summary": summary, "goals": goals})
    print(f"\nresults: {path}")
    if len(sizes) > 1:
        print(f"plot: {plot(summary, path.with_suffix('.png'))}")
    return 0 if ok else 1


def database_size() -> int:
    return int(subprocess.run([*SSH, "master", "runuser -u postgres -- psql -h /run/postgresql -At -d pe-puppetdb "
                               "-c \"select pg_database_size('pe-puppetdb')\""], capture_output=True, text=True,
                              check=True).stdout)


def measure(settings, cfg: LabConfig, methods: dict, chosen: list[str], models: dict, cpu_models: list[str], args,
            nodes: int) -> tuple[list[dict], bool]:
    """Every CPU model, link, run and method on the database of ``nodes`` nodes: one row per copy."""
    rows, ok = [], True
    hosts = {"master": cfg.master, "replica": cfg.replica}
    try:
        for cpus, link in [(c, link) for c in cpu_models for link in args.links.split(",")]:
            for host in hosts.values():
                core.outage(host, "fast" if link == "unlimited" else "slow", rate=link)
                core.pin_cpus(host, models[cpus][host.short])
            for run in range(args.runs):
                for method in chosen:
                    # Each flow ends with an agent run that reports to the master's PuppetDB: compare the copy
                    # with the source as it was when this run started.
                    source_print = full_fingerprint(settings, "master.lab.test")
                    wire = link_bytes(cfg.master)
                    with PeakSampler(hosts) as peaks:
                        res = methods[method](cfg)
                    wire = link_bytes(cfg.master) - wire
                    verified = full_fingerprint(settings, "replica.lab.test") == source_print
                    ok &= verified or method == "pgcopydb"  # the outside baseline: shown, never pe-ha's failure
                    row = {"nodes": nodes, "cpus": cpus, "link": link, "run": run + 1, "method": method,
                           "verified": verified, "wire_bytes": wire,
                           "peak_mib": {k: round(v, 1) for k, v in peaks.peaks.items()},
                           **{k: round(v, 2) if isinstance(v, float) else v for k, v in res.items()}}
                    rows.append(row)
                    print(f"  {nodes:>5} {cpus:>6} {link:>9} run {run + 1} {method:<16} {row['total']:7.1f} s  "
                          f"target unusable {row['target_unusable']:6.1f} s  wire {wire / 1e6:7.1f} MB  "
                          f"verified={verified}", flush=True)
    finally:
        for host in hosts.values():
            core.outage(host, "fast")
            core.pin_cpus(host, models["shared"][host.short])
    return rows, ok


def summarize(results: list[dict], sizes: list[int], cpu_models: list[str], links: list[str],
              chosen: list[str]) -> list[dict]:
    summary = []
    for nodes, cpus, link in [(n, c, link) for n in sizes for c in cpu_models for link in links]:
        def of(method: str, nodes=nodes, cpus=cpus, link=link) -> list[dict]:
            return [r for r in results if (r["nodes"], r["cpus"], r["link"], r["method"]) == (nodes, cpus, link, method)]

        base = of("documented")
        base_total, base_stop = median([r["total"] for r in base]), median([r["target_unusable"] for r in base])
        for method in chosen:
            rs = of(method)
            tot, stop = median([r["total"] for r in rs]), median([r["target_unusable"] for r in rs])
            summary.append({"nodes": nodes, "cpus": cpus, "link": link, "method": method, "runs": len(rs),
                            "median_s": round(tot, 1),
                            "ratio_vs_documented": round(tot / base_total, 2) if base else "",
                            "target_unusable_s": round(stop, 1),
                            "unusable_ratio": round(stop / base_stop, 2) if base else "",
                            "peak_worker_mib": max((r["peak_mib"]["worker"] for r in rs), default=""),
                            "peak_postgres_mib": {end: max((r["peak_mib"][f"{end} postgres"] for r in rs), default=0)
                                                  for end in ("master", "replica")},
                            "wire_mb": round(median([r["wire_bytes"] for r in rs]) / 1e6, 1),
                            "verified": all(r["verified"] for r in rs)})
    return summary


def plot(summary: list[dict], path):
    """Time against size, one line per method and CPU model (and link), into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    keys = sorted({(r["method"], r["cpus"], r["link"]) for r in summary})
    for method, cpus, link in keys:
        rows = sorted((r for r in summary if (r["method"], r["cpus"], r["link"]) == (method, cpus, link)),
                      key=lambda r: r["nodes"])
        ax.plot([r["nodes"] for r in rows], [r["median_s"] for r in rows], marker="o",
                linestyle="-" if cpus == "split" else "--", label=f"{method}, {cpus} CPUs, {link}")
    ax.set_xlabel("nodes (synthetic pe-puppetdb)")
    ax.set_ylabel("copy time, median s")
    ax.set_title("PuppetDB copy: time against size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# Issue #23's goals for the copy, per CPU model, as ratios to the documented procedure measured in the same run.
GOAL_RATIO = {("split", "unlimited"): 0.6, ("split", "100mbit"): 0.45,
              ("shared", "unlimited"): 0.8, ("shared", "100mbit"): 0.5}
GOAL_UNUSABLE_RATIO = 0.05


def copy_goals(summary: list[dict]) -> list[str]:
    """One plain line per goal that this run's rows can judge: met or MISSED, with the figures."""
    lines = []
    rows = {(r["nodes"], r["cpus"], r["link"], r["method"]): r for r in summary}
    for (nodes, cpus, link, method), row in sorted(rows.items()):
        if method != "pe-ha-fast" or row["ratio_vs_documented"] == "":
            continue
        where = f"{nodes} nodes, {cpus} CPUs, {link}"
        goal = GOAL_RATIO.get((cpus, link))
        if goal is not None:
            ok = row["ratio_vs_documented"] <= goal
            lines.append(f"goal: {where}: copy <= {goal} of documented: {row['ratio_vs_documented']} -> "
                         f"{'met' if ok else 'MISSED'}")
        ok = row["unusable_ratio"] <= GOAL_UNUSABLE_RATIO
        lines.append(f"goal: {where}: pe-puppetdb stopped <= {GOAL_UNUSABLE_RATIO} of documented: "
                     f"{row['unusable_ratio']} -> {'met' if ok else 'MISSED'}")
        other = rows.get((nodes, cpus, link, "pgcopydb"))
        if other is not None and link == "unlimited":
            ok = row["median_s"] < other["median_s"]
            lines.append(f"goal: {where}: faster than pgcopydb: {row['median_s']} s against {other['median_s']} s -> "
                         f"{'met' if ok else 'MISSED'}")
        at_1000 = rows.get((1000, cpus, link, method))
        if nodes > 1000 and at_1000 is not None and at_1000["ratio_vs_documented"] != "":
            ok = row["ratio_vs_documented"] <= at_1000["ratio_vs_documented"]
            lines.append(f"goal: {where}: ratio no worse than at 1000 nodes: {row['ratio_vs_documented']} against "
                         f"{at_1000['ratio_vs_documented']} -> {'met' if ok else 'MISSED'}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
