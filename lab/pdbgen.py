"""Fill a lab host's pe-puppetdb with synthetic data in PuppetDB's schema for the lab's PE profile
(deterministic for a node count)."""

from __future__ import annotations

import time

from lab import pdbschema
from lab.config import Host, LabConfig
from lab.core import node_run

DATA = "/opt/puppetlabs/sim/puppetdb_data.sql"
PSQL = ("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql")


def drop_database_sql(name: str) -> list[str]:
    """End the database's sessions, then drop it (PostgreSQL 11 has no DROP DATABASE ... WITH (FORCE))."""
    return ["-c", f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' "
                  "AND pid <> pg_backend_pid()",
            "-c", f'DROP DATABASE IF EXISTS "{name}"']


def create_database(cfg: LabConfig, host: Host, name: str = "pe-puppetdb") -> None:
    """An empty PuppetDB database as PE creates it: owned by pe-postgres, PE's database ACL, the extensions."""
    node_run(host, *PSQL, "-d", "postgres", *drop_database_sql(name), as_postgres=True)
    node_run(host, *PSQL, "-d", "postgres", input=pdbschema.database_sql(name=name), as_postgres=True)
    node_run(host, *PSQL, "-d", name, input=pdbschema.extensions_sql(), as_postgres=True)
    # PostgreSQL 15 and later no longer let everyone create in public: PuppetDB's role needs PE's grant first.
    node_run(host, *PSQL, "-d", name, input=pdbschema.database_grants_sql(cfg.profile), as_postgres=True)


# Per node, as the benchmarks generate it unless told otherwise
RESOURCES_PER_NODE, REPORTS_PER_NODE = 1000, 28


def generate(cfg: LabConfig, nodes: int, *, resources: int = RESOURCES_PER_NODE, reports: int = REPORTS_PER_NODE,
             host: Host | None = None) -> float:
    """(Re)create pe-puppetdb on ``host`` (default: master) with ``nodes`` synthetic nodes. Returns seconds."""
    host = host or cfg.master
    profile = cfg.profile
    started = time.monotonic()
    create_database(cfg, host)
    as_puppetdb = 'SET ROLE "pe-puppetdb";\n'
    node_run(host, *PSQL, "-d", "pe-puppetdb", "-1", input=as_puppetdb + pdbschema.schema_sql(profile), as_postgres=True)
    if nodes > 0:
        before, after = pdbschema.load_routing_sql(profile)
        if before:
            node_run(host, *PSQL, "-d", "pe-puppetdb", input=as_puppetdb + before, as_postgres=True)
        split = profile.partitioning == "latest"
        node_run(host, *PSQL, "-d", "pe-puppetdb", "-v", f"nodes={int(nodes)}", "-v", f"resources={int(resources)}",
                 "-v", f"reports={int(reports)}", "-v", f"producer={cfg.master.fqdn}",
                 "-v", f"latest_split={'true' if split else 'false'}", "-v", f"latest_col={', latest' if split else ''}",
                 "-v", f"latest_false={', false' if split else ''}",
                 "-v", f"latest_of_report={', r.latest' if split else ''}",
                 "-c", 'SET ROLE "pe-puppetdb"', "-f", DATA, as_postgres=True, timeout=3600)
        if after:
            node_run(host, *PSQL, "-d", "pe-puppetdb", input=as_puppetdb + after, as_postgres=True)
        node_run(host, *PSQL, "-d", "pe-puppetdb", "-At", input=as_puppetdb + pdbschema.sequences_after_load_sql(),
                 as_postgres=True)
    node_run(host, *PSQL, "-d", "pe-puppetdb", input=pdbschema.database_grants_sql(profile), as_postgres=True)
    if nodes > 0:
        node_run(host, *PSQL, "-d", "pe-puppetdb", "-c", "VACUUM (FREEZE, ANALYZE)", "-c", "CHECKPOINT",
                 as_postgres=True, timeout=3600)
    return time.monotonic() - started
