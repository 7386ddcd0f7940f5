"""PostgreSQL on the lab's master and replica: initdb with PE's layout, start, and PE's roles and databases."""

from __future__ import annotations

import shutil
from pathlib import Path

from lab import pdbschema, pgbuilds
from lab.config import LAB_DIR, SUBNET, Host, LabConfig
from lab.core import node_run, sh


def initdb(cfg: LabConfig, h: Host) -> None:
    data = _data_dir_parent_ready(cfg, h)
    pw = LAB_DIR / "secrets" / "pg_superuser"
    sh("setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "env", "-i", "LANG=C.UTF-8",
       str(pgbuilds.installed(cfg.profile.pg_major) / "native" / "bin" / "initdb"),
       "--no-sync", "-U", "postgres", f"--pwfile={pw}", "--auth-local=peer",
       "--auth-host=scram-sha-256", "-E", "UTF8", "-D", str(data))
    with open(data / "postgresql.conf", "a") as f:
        f.write(f"\n# pe-ha lab\nlisten_addresses = '{h.address}'\nport = 5432\n"
                # Debian's client tools look in /run/postgresql; PostgreSQL's own builds (PE's, and the 17
                # client tools here) in /tmp, which is each lab host's own.
                "unix_socket_directories = '/run/postgresql, /tmp'\nmax_connections = 100\n"
                "shared_buffers = 128MB\nmaintenance_work_mem = 128MB\nmax_wal_size = 2GB\n"
                "logging_collector = off\nmax_worker_processes = 8\n")
    with open(data / "pg_hba.conf", "a") as f:
        f.write(f"host all all {SUBNET}.0/24 scram-sha-256\nhost replication all {SUBNET}.0/24 scram-sha-256\n")


def restore_data(cfg: LabConfig, h: Host, snapshot: Path) -> None:
    """The data directory as ``core.up`` kept it after initdb, the roles, databases and seed (its snapshot)."""
    data = _data_dir_parent_ready(cfg, h)
    spare = snapshot / "spare" / h.short  # copied in the background after the last up (core._copy_spares)
    if spare.exists():
        try:
            spare.rename(data)
            return
        except OSError:  # on another filesystem: copied instead
            pass
    sh("cp", "-a", str(snapshot / h.short), str(data))


def _data_dir_parent_ready(cfg: LabConfig, h: Host) -> Path:
    """PE's data directory's parents, open to postgres as PE makes them; the data directory's path."""
    data = h.path(cfg.profile.pg_data)
    data.parent.mkdir(parents=True, exist_ok=True)
    for p in [h.path("/opt/puppetlabs/server"), h.path("/opt/puppetlabs/server/data"),
              *[data.parents[i] for i in range(0, 3)]]:
        p.chmod(0o755)
    shutil.chown(data.parent, "postgres", "postgres")
    return data


def stop_postgres(cfg: LabConfig, h: Host) -> None:
    node_run(h, f"{cfg.pg_bin}/pg_ctl", "-D", cfg.profile.pg_data, "-m", "fast", "-w", "-t", "60", "stop",
             as_postgres=True)


def start_postgres(cfg: LabConfig, h: Host, secrets: dict[str, str], *, create: bool = True) -> None:
    """Start the node's PostgreSQL; ``create``: PE's roles and databases (not there yet after initdb)."""
    node_run(h, f"{cfg.pg_bin}/pg_ctl", "-D", cfg.profile.pg_data, "-l", "/var/log/puppetlabs/postgresql/postgresql.log",
             "-w", "-t", "60", "start", as_postgres=True)
    _write_pgpass(h, secrets)
    if not create:
        return
    # No role for pe-ha: it runs psql as PostgreSQL's owner on the node, as the guide does.
    sql = [  # PE's superuser role; the lab's OS user stays postgres (docs/simulator.md)
           'CREATE ROLE "pe-postgres" SUPERUSER;',
           f"CREATE ROLE \"pe-puppetdb-migrator\" LOGIN PASSWORD '{secrets['pg_service']}';",
           f"CREATE ROLE \"pe-puppetdb\" LOGIN PASSWORD '{secrets['pg_service']}';",
           'GRANT "pe-puppetdb" TO "pe-puppetdb-migrator";']
    for db in ("pe-classifier", "pe-rbac", "pe-activity", "pe-orchestrator"):
        sql.append(f"CREATE ROLE \"{db}\" LOGIN PASSWORD '{secrets['pg_service']}';")
        sql.append(f"CREATE DATABASE \"{db}\" OWNER \"{db}\";")
    node_run(h, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql", "-d", "postgres",
             input="\n".join(sql), as_postgres=True)
    from lab import pdbgen

    pdbgen.create_database(cfg, h)
    node_run(h, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql", "-d", "pe-puppetdb",
             input=pdbschema.database_grants_sql(cfg.profile), as_postgres=True)


def _write_pgpass(h: Host, secrets: dict[str, str]) -> None:
    # the simulator's own services read PE's small databases with the service password
    pgpass = h.path("/root/.pgpass")
    pgpass.write_text(f"*:5432:*:pe-puppetdb:{secrets['pg_service']}\n*:5432:*:pe-classifier:{secrets['pg_service']}\n"
                      f"*:5432:*:pe-rbac:{secrets['pg_service']}\n*:5432:*:pe-activity:{secrets['pg_service']}\n"
                      f"*:5432:*:pe-orchestrator:{secrets['pg_service']}\n*:5432:*:postgres:{secrets['pg_superuser']}\n")
    pgpass.chmod(0o600)
