"""Imports run one way only: flows -> tasks -> pe_ha (the core). Production code never imports the lab."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "pe_ha": {"tasks", "flows", "deployments", "lab", "bench", "tests"},
    "tasks": {"flows", "deployments", "lab", "bench", "tests"},
    "flows": {"deployments", "lab", "bench", "tests"},
    "deployments": {"lab", "bench", "tests"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_import_direction():
    violations = []
    checked = 0
    for package, forbidden in FORBIDDEN.items():
        for path in (ROOT / package).rglob("*.py"):
            checked += 1
            bad = _imports(path) & forbidden
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert checked > 5
    assert violations == []


def test_only_commands_module_builds_puppet_commands():
    """Every command that reaches a PE node is built in pe_ha/commands.py."""
    offenders = []
    for package in ("tasks", "flows"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            pattern = re.compile(r'[\[(]\s*"puppet",\s*"(infrastructure|agent|resource|job|config)"'
                                 r'|[\[(]\s*"(runuser|iptables|scp|pg_dump|pg_restore|psql)",'
                                 r'|"/opt/puppetlabs/(bin|server/bin)/')
            for match in pattern.finditer(text):
                offenders.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert offenders == []


def test_pe_ha_never_connects_to_postgresql_over_the_network():
    """PE's PostgreSQL is read the guide's way (psql as its owner on the node, over SSH): production code has
    no database driver and no setting for a role, a password or a port, so it needs no role and no pg_hba line."""
    from pe_ha.settings import Settings

    drivers = {"psycopg", "psycopg2", "asyncpg", "pg8000"}
    offenders = [f"{path.relative_to(ROOT)} imports {sorted(_imports(path) & drivers)}"
                 for package in ("pe_ha", "tasks", "flows") for path in (ROOT / package).rglob("*.py")
                 if _imports(path) & drivers]
    assert offenders == []
    assert not {"pg_user", "pg_port", "pg_password_file"} & set(Settings.model_fields)


def test_import_linter_contracts_hold():
    """The layers, the lab ban and the task modules' independence, as import-linter contracts (pyproject.toml)."""
    tool = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(tool), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "3 kept, 0 broken" in result.stdout
