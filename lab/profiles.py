"""PE profiles: which PE version the lab simulates, with the PostgreSQL major and PuppetDB schema that
version ships and the ``puppet infrastructure`` flags it has. Sources for each fact: docs/simulator.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PE_DATABASES_BASE = ("pe-activity", "pe-classifier", "pe-orchestrator", "pe-rbac")

# Puppet's global options, valid on every subcommand (peadm passes `--color false --render-as json`).
GLOBAL_FLAGS = ("--color", "--render-as", "--verbose", "--debug", "--trace", "--help", "-h", "--log_level")
# Flags of PE 2019.7 and later (the contract's CLI table); 2019.5 lacks `provision --enable`.
_COMMON_FLAGS = {
    "provision": ("--enable", "--topology", "--skip-agent-config", "--yes", "-y", "--token-file"),
    "enable": ("--topology", "--skip-agent-config", "--yes", "-y", "--token-file", "--agent-server-urls",
               "--pcp-brokers", "--infra-agent-server-urls", "--infra-pcp-brokers", "--master-uris",
               "--infra-master-uris", "--classifier-termini", "--puppetdb-termini"),
    "promote": ("--topology", "--yes", "-y", "--skip-agent-config", "--classifier-termini", "--puppetdb-termini",
                "--infra-agent-server-urls", "--infra-pcp-brokers", "--agent-server-urls", "--pcp-brokers"),
    "forget": ("--token-file", "--yes", "-y"),
    "reinitialize": ("--db", "--yes", "-y"),
    "status": ("--format", "--verbose", "--host"),
    "run": ("--token-file",),
}


@dataclass(frozen=True)
class PeProfile:
    name: str  # what `python -m lab up --pe` takes
    pe_version: str  # written to /opt/puppetlabs/server/pe_version
    pg_major: int
    puppetdb_version: str
    # events: resource_events alone has INHERITS day children (PuppetDB 6.8-6.9, migration 73);
    # inherits: reports too (6.10-7.12, migration 74); declarative: PARTITION BY RANGE by day (7.13-8.6);
    # latest: LIST on a `latest` flag, the historical part RANGE by day (8.7, migrations 86 and 87)
    partitioning: Literal["events", "inherits", "declarative", "latest"]
    schema_migration: int  # the last PuppetDB migration of that version (schema_migrations)
    trgm_required: bool
    reinitialize_databases: tuple[str, ...]  # what `reinitialize replica --db` accepts
    secret_key_files: tuple[str, ...]  # copied to the replica before provisioning (the version's own step)
    # PuppetDB is the real one (Debian's puppetdb, lab/realpuppet.py): it builds pe-puppetdb by its own migrations
    # and is fed through its command API, instead of lab/pdbschema.py and lab/pdbgen.py.
    real_puppetdb: bool = False

    @property
    def infra_flags(self) -> dict[str, tuple[str, ...]]:
        flags = dict(_COMMON_FLAGS)
        if self.pe_line < (2019, 7):  # `provision --enable` (and its --skip-agent-config) came with 2019.7
            flags["provision"] = tuple(f for f in flags["provision"] if f not in ("--enable", "--skip-agent-config"))
        return {sub: (*own, *GLOBAL_FLAGS) for sub, own in flags.items()}

    @property
    def pe_line(self) -> tuple[int, int]:
        year, minor = self.pe_version.split(".")[:2]
        return int(year), int(minor)

    @property
    def pg_data(self) -> str:
        return f"/opt/puppetlabs/server/data/postgresql/{self.pg_major}/data"

    @property
    def pg_apps(self) -> str:
        """Where PE keeps its PostgreSQL server binaries."""
        return f"/opt/puppetlabs/server/apps/postgresql/{self.pg_major}"


_ORCH_KEYS = "/etc/puppetlabs/orchestration-services/conf.d/secrets/keys.json"
PROFILES = {
    # The guide's own version: PE 2019.5 ships PuppetDB 6.9 (migration 73: resource_events in INHERITS day
    # children, reports still one table) on PostgreSQL 11; its guide names no secret key to copy.
    "2019.5": PeProfile("2019.5", "2019.5.0", 11, "6.9.1", "events", 73, False, PE_DATABASES_BASE, ()),
    "2019.8": PeProfile("2019.8", "2019.8.12", 11, "6.22.1", "inherits", 76, False, PE_DATABASES_BASE,
                        (_ORCH_KEYS,)),
    "2021.7": PeProfile("2021.7", "2021.7.9", 11, "7.20.1", "declarative", 88, False, PE_DATABASES_BASE,
                        (_ORCH_KEYS, "/etc/puppetlabs/orchestration-services/conf.d/secrets/orchestrator-encryption-keys.json",
                         "/etc/puppetlabs/console-services/conf.d/secrets/keys.json")),
    # PE 2023.8.0 ships PuppetDB 8.7.0 (PE 2025.0's "What gets installed"): migrations 84-87 (certnames_status,
    # the latest/historical split of reports and resource_events).
    "2023.8": PeProfile("2023.8", "2023.8.0", 14, "8.7.0", "latest", 87, True,
                        (*PE_DATABASES_BASE, "pe-inventory"),
                        (_ORCH_KEYS, "/etc/puppetlabs/orchestration-services/conf.d/secrets/orchestrator-encryption-keys.json",
                         "/etc/puppetlabs/console-services/conf.d/secrets/keys.json")),
    # PE 2025.0.0 ships PuppetDB 8.8.2 and PostgreSQL 14 (its "What gets installed" page); 8.8.x has migration 88
    # (catalogs' certname made unique). Its DR pages read like 2023.8's (pe-current-versions.md).
    "2025.0": PeProfile("2025.0", "2025.0.0", 14, "8.8.2", "latest", 88, True,
                        (*PE_DATABASES_BASE, "pe-inventory"),
                        (_ORCH_KEYS, "/etc/puppetlabs/orchestration-services/conf.d/secrets/orchestrator-encryption-keys.json",
                         "/etc/puppetlabs/console-services/conf.d/secrets/keys.json")),
    # PE 2025.11 and later run PostgreSQL 17 (PE's "Supported PostgreSQL versions"). Their PuppetDB's migrations
    # are not public (the repository stops at 8.8.1, migration 88): modelled as 8.8's schema (docs/simulator.md).
    "2025.11": PeProfile("2025.11", "2025.11.0", 17, "8.8 (schema)", "latest", 88, True,
                         (*PE_DATABASES_BASE, "pe-inventory"),
                         (_ORCH_KEYS, "/etc/puppetlabs/orchestration-services/conf.d/secrets/orchestrator-encryption-keys.json",
                          "/etc/puppetlabs/console-services/conf.d/secrets/keys.json")),
    # PE 2021.7 with the PuppetDB Debian 12 ships (7.12.1: migration 80, INHERITS day children); no PE release note
    # found names 7.12.1, so this is not a PE release's exact PuppetDB (docs/simulator.md).
    "2021.7-real": PeProfile("2021.7-real", "2021.7.9", 11, "7.12.1", "inherits", 80, True, PE_DATABASES_BASE,
                             (_ORCH_KEYS, "/etc/puppetlabs/orchestration-services/conf.d/secrets/orchestrator-encryption-keys.json",
                              "/etc/puppetlabs/console-services/conf.d/secrets/keys.json"), real_puppetdb=True),
}
DEFAULT_PROFILE = "2019.8"


def profile(name: str) -> PeProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"no lab profile for PE {name!r}; the lab has {', '.join(PROFILES)}") from None
