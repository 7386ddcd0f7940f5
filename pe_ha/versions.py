"""PE versions pe-ha supports, and what each needs of the procedures (SOURCES.md's CLI table).

pe-ha is tested against the lab's PE profiles: 2019.5 (the guide's own), 2019.8, 2021.7, 2023.8, 2025.0
(PostgreSQL 14) and 2025.11 (PostgreSQL 17). It serves PE 2019.5.x, 2019.8.x, 2021.x, 2023.x and 2025.0 to
2025.11; anything else, including a line newer than the newest profile, is refused before a procedure changes
anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pe_ha.errors import PreconditionFailed

SUPPORTED_TEXT = "PE 2019.5.x, 2019.8.x, 2021.x, 2023.x and 2025.0 to 2025.11"
NEWEST_TESTED = (2025, 11)
_VERSION_RE = re.compile(r"^\s*(\d{4})\.(\d+)(?:\.(\d+))?")
ORCHESTRATOR_KEYS = "/etc/puppetlabs/orchestration-services/conf.d/secrets/keys.json"
ORCHESTRATOR_ENCRYPTION_KEYS = "/etc/puppetlabs/orchestration-services/conf.d/secrets/orchestrator-encryption-keys.json"
CONSOLE_KEYS = "/etc/puppetlabs/console-services/conf.d/secrets/keys.json"
# Copied to a new replica when the primary has them (peadm's add_replica.pp): Hiera is not replicated, and the
# console's LDAP/AD CA chain exists only where directory service is configured.
HIERA_CONFIG = "/etc/puppetlabs/puppet/hiera.yaml"
AD_CA_CHAIN = "/opt/puppetlabs/server/data/console-services/certs/ad_ca_chain.pem"
REPLICA_FILES_IF_PRESENT = (HIERA_CONFIG, AD_CA_CHAIN)


@dataclass(frozen=True, order=True)
class PeVersion:
    year: int
    minor: int
    patch: int = 0

    def __str__(self) -> str:
        return f"{self.year}.{self.minor}.{self.patch}"

    @property
    def supported(self) -> bool:
        line = (self.year, self.minor)
        return line == (2019, 5) or ((2019, 8) <= line <= NEWEST_TESTED and self.year in (2019, 2021, 2023, 2025))

    @property
    def documents_manual_copy(self) -> bool:
        """PE's guide has "Manually copy PuppetDB to speed replication", beside provisioning, up to 2019.5; from
        2019.7 provisioning syncs PuppetDB faster itself and the section is gone (docs-archive, 2019.7 notes)."""
        return (self.year, self.minor) <= (2019, 5)

    @property
    def secret_key_files(self) -> tuple[str, ...]:
        """Secret keys a new replica needs from the primary before provisioning (PE's own step), without which a
        promoted replica cannot read the secrets stored on the old master: none in the 2019.5 guide, one file
        from 2019.7 (the 2019.8 docs), three from 2021.7 (the 2021.7 docs; 2021.6's list is not documented, so it
        gets the longer one)."""
        if (self.year, self.minor) < (2019, 7):  # the 2019.5 guide names no key to copy
            return ()
        if (self.year, self.minor) < (2021, 6):
            return (ORCHESTRATOR_KEYS,)
        return (ORCHESTRATOR_KEYS, ORCHESTRATOR_ENCRYPTION_KEYS, CONSOLE_KEYS)


    @property
    def reinitialize_databases(self) -> tuple[str, ...]:
        """What ``puppet infrastructure reinitialize replica --db`` accepts. PE's current "Reinitialize a replica"
        page adds ``pe-inventory`` to the four; the 2021.7 page lists the four. The release that added it is not
        documented, so it is offered from 2023.8 (the LTS that has it, as the lab's 2023.8 profile), refused below."""
        base = ("pe-activity", "pe-classifier", "pe-orchestrator", "pe-rbac")
        return (*base, "pe-inventory") if (self.year, self.minor) >= (2023, 8) else base


def parse(text: str) -> PeVersion | None:
    """``/opt/puppetlabs/server/pe_version`` (``2019.8.12``); None when it is not a PE version."""
    m = _VERSION_RE.match(text or "")
    if not m:
        return None
    return PeVersion(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def require_supported(text: str, host: str) -> PeVersion:
    version = parse(text)
    if version is None:
        raise PreconditionFailed(f"{host}: /opt/puppetlabs/server/pe_version reads {text.strip()[:40]!r}, not a PE version",
                                 hint="run pe-ha against a PE primary server (or its replica)")
    if not version.supported:
        if (version.year, version.minor) > NEWEST_TESTED:
            raise PreconditionFailed(
                f"{host} runs PE {version}, newer than PE {NEWEST_TESTED[0]}.{NEWEST_TESTED[1]}, the newest line "
                f"pe-ha is tested on; pe-ha supports {SUPPORTED_TEXT}",
                hint="run this procedure by hand from PE's documentation for your version, or use a pe-ha "
                     "release tested on it")
        raise PreconditionFailed(f"{host} runs PE {version}; pe-ha supports {SUPPORTED_TEXT}",
                                 hint="upgrade PE first, or run this procedure by hand from PE's documentation "
                                      "for your version")
    return version
