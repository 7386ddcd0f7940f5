"""Typed settings for pe-ha, read from ``PEHA_*`` environment variables and a ``.env`` file.

Nested values (a host) are JSON, for example::

    PEHA_MASTER='{"name": "pe-master.example.com"}'
    PEHA_REPLICA='{"name": "pe-replica.example.com", "address": "10.0.0.12"}'
    PEHA_MANAGED_NODES='[{"name": "agent1.example.com"}]'
    PEHA_SSH_KEY_FILE=/etc/pe-ha/id_ed25519

Secrets are read from files and kept as ``SecretStr``; they are registered for masking when read.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pe_ha import inventory, validation
from pe_ha.approval import ApprovalPolicy
from pe_ha.errors import ConfigurationError, ValidationError
from pe_ha.masking import register_secret

DEFAULT_REMOTE_PATH = (
    "/opt/puppetlabs/bin:/opt/puppetlabs/puppet/bin:/opt/puppetlabs/server/bin:"
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)


class HostSettings(BaseModel):
    """One PE node and how to reach it over SSH."""

    name: str = Field(description="The node's certname / FQDN, as PE knows it.")
    address: str | None = Field(default=None, description="SSH address; defaults to the name.")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port.")
    user: str = Field(
        default="root",
        description="SSH user. A non-root user must be allowed password-less sudo; pe-ha then runs "
        "commands in a full root environment.",
    )

    @field_validator("name")
    @classmethod
    def _rfc1123(cls, value: str) -> str:
        try:
            return validation.hostname(value)
        except ValidationError as exc:
            raise ValueError(exc.message) from None

    @property
    def ssh_address(self) -> str:
        return self.address or self.name


class InventorySource(PydanticBaseSettingsSource):
    """The settings a Bolt-like inventory file gives (``PEHA_INVENTORY_FILE``; see ``pe_ha.inventory``)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # the whole file is read at once, in __call__

    def __call__(self) -> dict[str, Any]:
        path = _inventory_path()
        return inventory.load(path) if path else {}


def _inventory_path() -> Path | None:
    """The inventory file named by the environment, else by the ``.env`` file."""
    import os

    value = os.environ.get(inventory.SETTING)
    if value is None and Path(".env").is_file():
        from dotenv import dotenv_values

        value = dotenv_values(".env").get(inventory.SETTING)
    return Path(value) if value else None


class Settings(BaseSettings):
    """Everything pe-ha needs to reach one PE installation."""

    model_config = SettingsConfigDict(
        env_prefix="PEHA_", env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # PEHA_* variables and .env lines first; the inventory file fills what they leave out.
        return init_settings, env_settings, dotenv_settings, InventorySource(settings_cls), file_secret_settings

    inventory_file: Path | None = Field(
        default=None, description="A Bolt-like inventory.yaml giving the installation, hosts and SSH files "
                                  "(pe_ha/inventory.py); PEHA_* variables take precedence over it.")

    installation: str = Field(
        default="default",
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="Short name of this PE installation; names the per-installation lock.",
    )
    master: HostSettings = Field(description="The primary master (JSON host object).")
    replica: HostSettings | None = Field(default=None, description="The replica (JSON host object).")
    managed_nodes: list[HostSettings] = Field(
        default_factory=list, description="Managed (agent) nodes used for verification runs (JSON list)."
    )
    ssh_key_file: Path = Field(description="Private key for SSH logins to PE nodes.")
    ssh_known_hosts_file: Path = Field(description="known_hosts file; host keys are checked strictly.")
    ssh_connect_timeout_s: float = Field(default=10, gt=0, le=300, description="SSH connect timeout.")
    agent_concurrency: int = Field(default=16, ge=1, le=64,
                                   description="Most Puppet agent runs a flow drives at once across managed nodes.")
    command_timeout_s: float = Field(
        default=3600, gt=0, le=86400, description="Default limit for one remote command; enforced on the host."
    )
    rbac_token_file: Path = Field(description="File holding an admin RBAC token (from puppet-access login).")
    remote_token_file: str = Field(
        default="/root/.puppetlabs/pe-ha.token",
        description="Where pe-ha stages the token on a PE node (mode 0600) for --token-file.",
    )
    token_min_validity_s: float = Field(
        default=1800, ge=0, description="A token must stay valid this long before a long step starts."
    )
    ca_cert: Path = Field(description="PE CA certificate used to verify PE's HTTPS APIs.")
    client_cert: Path | None = Field(default=None, description="Client certificate for PE's APIs (optional).")
    client_key: Path | None = Field(default=None, description="Client key for PE's APIs (optional).")
    http_connect_timeout_s: float = Field(default=5, gt=0, le=120, description="HTTPS connect timeout.")
    http_read_timeout_s: float = Field(default=30, gt=0, le=600, description="HTTPS read timeout.")
    pg_os_user: str = Field(default="pe-postgres", description="OS user that owns PE's PostgreSQL.")
    pg_bin_dir: str = Field(default="/opt/puppetlabs/server/bin", description="PE's PostgreSQL client tools.")
    index_build_memory_mb: int = Field(
        default=512, ge=16, le=16384,
        description="maintenance_work_mem (MB) of each session that builds indexes in the replica's staging copy "
                    "(fast copy; one session per running job, at most the replica's CPU count).")
    pg_data_dir: str = Field(default="/opt/puppetlabs/server/data/postgresql",
                             description="PostgreSQL data folder on master and replica (free-space check of a fast copy).")
    dump_dir: str = Field(default="/var/tmp", description="Folder for PuppetDB dumps on master and replica.")
    backup_dir: Path = Field(default=Path("/var/lib/pe-ha/backups"),
                             description="Where classifier backups are written on the worker (mode 0700).")
    remote_lang: str = Field(default="C.UTF-8", description="LANG for remote root sessions.")
    remote_path: str = Field(default=DEFAULT_REMOTE_PATH, description="PATH for remote root sessions.")
    alert_webhook_url: str | None = Field(
        default=None, description="Where pe-ha's alerts are posted (a Prefect custom webhook); set-up refuses to "
                                  "create the alert automations without one, unless told --no-alerts.")
    approval_policy: ApprovalPolicy = Field(
        default=ApprovalPolicy.ANY,
        description="Who may approve a destructive step: any (a name typed in the UI or given to `pe-ha approve`), "
                    "identified (only `pe-ha approve` with the approver's own RBAC token), two-person (identified, "
                    "and not the PE user who started the run).")
    approval_timeout_s: int = Field(default=3600, ge=1, le=7 * 86400,
                                    description="How long an approval pause waits for an answer; then the run fails "
                                                "(and alerts) with nothing after the approval done.")
    lock_wait_s: float = Field(default=900, ge=0, le=86400,
                               description="How long a procedure waits for the installation's lock before it fails "
                                           "naming the run that holds it.")
    pause_poll_s: int = Field(default=2, ge=1, le=60, description="How often a paused run checks for its answer.")
    health_interval_s: int = Field(default=300, ge=10, le=86400,
                                   description="verify_health schedule interval in seconds (10 s to a day).")

    # -- checks -------------------------------------------------------------------------------------

    def check_files(self) -> None:
        """Fail with the setting's name when a file it names is missing or unreadable."""
        for field in ("ssh_key_file", "ssh_known_hosts_file", "rbac_token_file", "ca_cert"):
            _readable(field, getattr(self, field))
        for field in ("client_cert", "client_key"):
            if getattr(self, field) is not None:
                _readable(field, getattr(self, field))

    # -- inventory ----------------------------------------------------------------------------------

    def all_hosts(self) -> list[HostSettings]:
        hosts = [self.master] + ([self.replica] if self.replica else []) + list(self.managed_nodes)
        return hosts

    def host(self, name: str) -> HostSettings:
        """The inventory entry for ``name``; refuses a host that is not in the inventory."""
        wanted = validation.hostname(name)
        for entry in self.all_hosts():
            if entry.name == wanted:
                return entry
        raise ValidationError(
            f"host {name!r} is not in the inventory",
            hint="add it to PEHA_MASTER, PEHA_REPLICA or PEHA_MANAGED_NODES",
        )

    def pick_host(self, name: str | None, *, default: str | None, what: str) -> str:
        """A host parameter: an RFC 1123 name that is in the inventory; empty means ``default``."""
        if name is None:
            if default is None:
                raise ValidationError(f"{what}: no host given and none configured")
            name = default
        return self.host(validation.hostname(name, what=what)).name

    def master_and_replica(self, master: str | None = None, replica: str | None = None) -> tuple[str, str]:
        """The master and the replica a procedure works on: the parameters, else the inventory's; never one host."""
        master = self.pick_host(master, default=self.master.name, what="master")
        replica = self.pick_host(replica, default=self.replica.name if self.replica else None, what="replica")
        distinct(master, replica, "replica")
        return master, replica

    def require_replica(self) -> HostSettings:
        if self.replica is None:
            raise ConfigurationError("PEHA_REPLICA", "no replica is configured")
        return self.replica

    # -- secrets ------------------------------------------------------------------------------------

    def rbac_token(self) -> SecretStr:
        """The admin RBAC token, registered for masking."""
        return SecretStr(_read_secret("rbac_token_file", self.rbac_token_file))


def _readable(field: str, path: Path) -> None:
    env = f"PEHA_{field.upper()}"
    if not path.exists():
        raise ConfigurationError(env, f"{path} does not exist")
    if not path.is_file():
        raise ConfigurationError(env, f"{path} is not a file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigurationError(env, f"{path} cannot be read ({exc.strerror})") from None


def _read_secret(field: str, path: Path) -> str:
    _readable(field, path)
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise ConfigurationError(f"PEHA_{field.upper()}", f"{path} is empty")
    register_secret(value)
    return value


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's errors into one ConfigurationError naming the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        field = str(first["loc"][0]) if first["loc"] else "?"
        problem = "is missing" if first["type"] == "missing" else f"is invalid: {first['msg']}"
        raise ConfigurationError(
            f"PEHA_{field.upper()}", f"{loc} {problem}", hint=f"{len(exc.errors())} problem(s) in all"
        ) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached)."""
    return load_settings()


def distinct(a: str, b: str, what: str) -> None:
    """Refuse one host given as both ends of a procedure."""
    if a == b:
        raise ValidationError(f"{what}: {a} cannot be both the master and the replica")
