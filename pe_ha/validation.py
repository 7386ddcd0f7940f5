"""Strict patterns for every operator input that ends up in a remote command.

Inputs are validated here, before any command is built; quoting happens later, only at the executor
boundary. Every refusal says which input was wrong and why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal, get_args

from pe_ha.errors import ValidationError

Topology = Literal["mono", "mono-with-compile"]
ReplicaDatabase = Literal["pe-activity", "pe-classifier", "pe-orchestrator", "pe-rbac", "pe-inventory"]
ServiceName = Literal[
    "puppet",
    "pe-puppetdb",
    "pe-puppetserver",
    "pe-console-services",
    "pe-orchestration-services",
    "pe-postgresql",
    "pxp-agent",
]
ServiceEnsure = Literal["running", "stopped"]

TOPOLOGIES: tuple[str, ...] = get_args(Topology)
REPLICA_DATABASES: tuple[str, ...] = get_args(ReplicaDatabase)
SERVICES: tuple[str, ...] = get_args(ServiceName)

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PATH_RE = re.compile(r"/[A-Za-z0-9._/+-]*")
_DBNAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_SETTING_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_SECTION_RE = re.compile(r"main|agent|server|master|user")


def hostname(value: str, *, what: str = "host") -> str:
    """An RFC 1123 host name (ASCII letters, digits, hyphens; labels <= 63; total <= 253). Lower-cased."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{what}: a host name is required")
    if not value.isascii():
        raise ValidationError(f"{what} {value!r}: only ASCII letters, digits, '-' and '.' are allowed")
    if len(value) > 253:
        raise ValidationError(f"{what}: {len(value)} characters is longer than the 253 that RFC 1123 allows")
    name = value.lower()
    if not _HOSTNAME_RE.fullmatch(name):
        raise ValidationError(
            f"{what} {value!r} is not an RFC 1123 host name",
            hint="use letters, digits and '-', with labels of 1-63 characters that neither start nor end with '-'",
        )
    return name


def server_url(value: str, *, what: str, default_port: int) -> str:
    """``host[:port]`` as used by server_list / pcp_broker_list entries."""
    host, sep, port = value.partition(":")
    hostname(host, what=what)
    if sep:
        if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise ValidationError(f"{what} {value!r}: the port must be a number from 1 to 65535")
        return f"{host.lower()}:{int(port)}"
    return f"{host.lower()}:{default_port}"


def server_urls(values: Iterable[str], *, what: str, default_port: int) -> list[str]:
    urls = [server_url(v, what=what, default_port=default_port) for v in values]
    if not urls:
        raise ValidationError(f"{what}: at least one host[:port] is required")
    return urls


def topology(value: str) -> str:
    if value not in TOPOLOGIES:
        raise ValidationError(f"topology {value!r} is not one of {', '.join(TOPOLOGIES)}")
    return value


def replica_database(value: str) -> str:
    if value not in REPLICA_DATABASES:
        raise ValidationError(
            f"database {value!r} cannot be reinitialized",
            hint=f"choose from {', '.join(REPLICA_DATABASES)} (or none for all databases)",
        )
    return value


def service(value: str) -> str:
    if value not in SERVICES:
        raise ValidationError(f"service {value!r} is not one pe-ha manages ({', '.join(SERVICES)})")
    return value


def ensure(value: str) -> str:
    if value not in ("running", "stopped"):
        raise ValidationError(f"ensure={value!r}: must be running or stopped")
    return value


def absolute_path(value: str, *, what: str = "path") -> str:
    if not isinstance(value, str) or not _PATH_RE.fullmatch(value) or "/../" in value + "/" or len(value) > 1024:
        raise ValidationError(
            f"{what} {value!r} must be an absolute path of letters, digits and . _ / + - only, without '..'"
        )
    return value


def database_name(value: str) -> str:
    if not _DBNAME_RE.fullmatch(value):
        raise ValidationError(f"database name {value!r} is not a plain PostgreSQL name")
    return value


def os_user(value: str) -> str:
    if not _DBNAME_RE.fullmatch(value):
        raise ValidationError(f"user name {value!r} is not a plain system user name")
    return value


def puppet_setting(value: str) -> str:
    if not _SETTING_RE.fullmatch(value):
        raise ValidationError(f"puppet setting {value!r} is not a plain setting name")
    return value


def puppet_section(value: str) -> str:
    if not _SECTION_RE.fullmatch(value):
        raise ValidationError(f"puppet.conf section {value!r} is not one of main, agent, server, master, user")
    return value


def timeout_seconds(value: float, *, what: str, minimum: float = 1, maximum: float = 24 * 3600) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise ValidationError(f"{what}={value!r}: must be between {minimum:g} and {maximum:g} seconds")
    return float(value)


def positive_int(value: int, *, what: str, maximum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise ValidationError(f"{what}={value!r}: must be a whole number from 1 to {maximum}")
    return value
