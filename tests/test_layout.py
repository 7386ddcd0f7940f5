"""Imports run one way only: flows -> tasks -> pe_ha (the core). Production code never imports the lab."""

from __future__ import annotations

import ast
import re
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
