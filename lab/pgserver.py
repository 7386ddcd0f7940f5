"""A throw-away PostgreSQL server on 127.0.0.1 for a Prefect server backed by PostgreSQL.

It runs in the machine's own network namespace (the Prefect server is there, not in the lab), from
Debian's postgresql-15 binaries, as the ``postgres`` OS user, with its data in a folder of its own.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, check=check)


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int
    database: str = "prefect"
    user: str = "prefect"
    password: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def url(self) -> str:
        """SQLAlchemy URL for ``PREFECT_SERVER_DATABASE_CONNECTION_URL`` (asyncpg driver)."""
        return f"postgresql+asyncpg://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def start(self, timeout_s: float = 30) -> LocalPostgres:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        shutil.chown(self.data_dir, "postgres", "postgres")
        self.data_dir.chmod(0o700)
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-A", "scram-sha-256", "--auth-local=trust",
                     "-U", "postgres", "--no-sync", "-E", "UTF8")
        # Prefect's server keeps a pool per process; fsync off is fine for a test database only.
        conf = (f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.data_dir}'\n"
                "max_connections = 200\nfsync = off\nsynchronous_commit = off\nshared_buffers = 256MB\n")
        (self.data_dir / "postgresql.auto.conf").write_text(conf)
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"),
                     "-w", "-t", str(int(timeout_s)), "start")
        self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        self.psql(f"CREATE DATABASE {self.database} OWNER {self.user}")
        deadline = time.monotonic() + timeout_s
        while _as_postgres(str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), check=False).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on port {self.port} did not become ready")
            time.sleep(0.2)
        return self

    def psql(self, sql: str) -> str:
        r = _as_postgres("psql", "-X", "-q", "-A", "-t", "-h", str(self.data_dir), "-p", str(self.port), "-d", "postgres",
                         "-v", "ON_ERROR_STOP=1", "-c", sql, check=False)
        if r.returncode:
            raise RuntimeError(f"psql failed: {r.stderr.strip()}")
        return r.stdout

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.data_dir, ignore_errors=True)
