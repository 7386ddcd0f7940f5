"""Fill the master's pe-puppetdb with synthetic, PuppetDB-shaped data (deterministic for a node count)."""

from __future__ import annotations

import time

from lab.config import LabConfig
from lab.core import node_run

SCHEMA = "/opt/puppetlabs/sim/puppetdb_schema.sql"
DATA = "/opt/puppetlabs/sim/puppetdb_data.sql"


def generate(cfg: LabConfig, nodes: int, *, resources: int = 1000, reports: int = 28, host=None) -> float:
    """(Re)create pe-puppetdb on ``host`` (default: master) with ``nodes`` synthetic nodes. Returns seconds."""
    host = host or cfg.master
    started = time.monotonic()
    psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql"]
    node_run(host, *psql, "-d", "postgres", "-c", 'DROP DATABASE IF EXISTS "pe-puppetdb" WITH (FORCE)', as_postgres=True)
    node_run(host, *psql, "-d", "postgres", "-c", 'CREATE DATABASE "pe-puppetdb" OWNER "pe-puppetdb"', as_postgres=True)
    node_run(host, *psql, "-d", "pe-puppetdb", "-c", 'SET ROLE "pe-puppetdb"', "-f", SCHEMA, as_postgres=True)
    if nodes > 0:
        node_run(host, *psql, "-d", "pe-puppetdb", "-v", f"nodes={int(nodes)}", "-v", f"resources={int(resources)}",
                 "-v", f"reports={int(reports)}", "-v", f"producer={cfg.master.fqdn}",
                 "-c", 'SET ROLE "pe-puppetdb"', "-f", DATA, as_postgres=True, timeout=3600)
        node_run(host, *psql, "-d", "pe-puppetdb", "-c", "VACUUM (FREEZE, ANALYZE)", "-c", "CHECKPOINT",
                 as_postgres=True, timeout=3600)
    return time.monotonic() - started
