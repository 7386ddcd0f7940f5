"""Lab topology and paths."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.profiles import DEFAULT_PROFILE, PeProfile, profile

LAB_DIR = Path(os.environ.get("PEHA_LAB_DIR", "/var/lib/pe-ha-lab"))
PREFIX = "peha"  # netns names: peha-sw, peha-<host>; root veth: peha0
SUBNET = "198.18.0"
ROOT_ADDR = f"{SUBNET}.1"
DOMAIN = "lab.test"
# Debian's PostgreSQL 15 client tools stand in for PE's psql, pg_dump and pg_restore (the server builds have
# none); the server itself is the profile's major (lab.pgbuilds).
PG_CLIENT_BIN = "/usr/lib/postgresql/15/bin"
# Mounted over the host's view, in this order (/tmp last: it hides the lab dir on some set-ups).
NODE_MOUNTS = ("/etc/puppetlabs", "/opt/puppetlabs", "/var/log/puppetlabs", "/root", "/etc/ssh",
               "/run/postgresql", "/var/tmp", "/tmp")
NODE_FILE_MOUNTS = ("/etc/hosts", "/etc/hostname")


@dataclass
class Host:
    short: str
    role: str  # master | replica | agent
    address: str

    @property
    def fqdn(self) -> str:
        return f"{self.short}.{DOMAIN}"

    @property
    def netns(self) -> str:
        return f"{PREFIX}-{self.short}"

    @property
    def tree(self) -> Path:
        return LAB_DIR / "nodes" / self.short

    def path(self, inside: str) -> Path:
        """The lab-dir path behind ``inside`` (a path as the host sees it)."""
        for mount in NODE_MOUNTS:
            if inside == mount or inside.startswith(mount + "/"):
                return self.tree / mount.strip("/").replace("/", "_") / inside[len(mount):].lstrip("/")
        raise ValueError(f"{inside} is not inside a per-host mount")

    @property
    def has_postgres(self) -> bool:
        return self.role in ("master", "replica")


@dataclass
class LabConfig:
    agents: int = 2
    sync_seconds: float = 6.0
    pdb_nodes: int = 20
    pe: str = DEFAULT_PROFILE
    hosts: list[Host] = field(default_factory=list)

    def __post_init__(self) -> None:
        profile(self.pe)  # an unknown version is refused here, before anything is built
        if not 1 <= self.agents <= 60:
            raise ValueError("agents must be 1..60")
        if not self.hosts:
            self.hosts = [Host("master", "master", f"{SUBNET}.11"), Host("replica", "replica", f"{SUBNET}.12")]
            self.hosts += [Host(f"agent{i}", "agent", f"{SUBNET}.{20 + i}") for i in range(1, self.agents + 1)]

    @property
    def profile(self) -> PeProfile:
        return profile(self.pe)

    @property
    def pg_bin(self) -> str:
        """The profile's PostgreSQL server binaries, as a lab host sees them."""
        return f"{self.profile.pg_apps}/bin"

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if name in (h.short, h.fqdn):
                return h
        raise KeyError(f"no lab host {name!r}")

    @property
    def master(self) -> Host:
        return self.host("master")

    @property
    def replica(self) -> Host:
        return self.host("replica")

    @property
    def agent_hosts(self) -> list[Host]:
        return [h for h in self.hosts if h.role == "agent"]

    def save(self) -> None:
        (LAB_DIR / "lab.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls) -> LabConfig:
        data = json.loads((LAB_DIR / "lab.json").read_text())
        data["hosts"] = [Host(**h) for h in data["hosts"]]
        return cls(**data)
