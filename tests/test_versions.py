"""Which PE versions pe-ha serves: the release lines its lab profiles test, and nothing newer."""

from __future__ import annotations

import pytest

from pe_ha import versions
from pe_ha.errors import PreconditionFailed


@pytest.mark.parametrize(("text", "supported"), [
    ("2019.5.0", True),  # the guide's own version
    ("2019.4.0", False),
    ("2019.7.3", False),  # no profile
    ("2019.8.12", True),
    ("2021.7.9", True),
    ("2023.8.0", True),
    ("2023.8.10", True),
    ("2025.0.0", True),
    ("2025.10.1", True),
    ("2025.11.0", True),  # PostgreSQL 17 (profile 2025.11)
    ("2025.12.1", False),  # documented, but newer than the newest profile
    ("2026.1.0", False),
    ("2022.1.0", False),  # no such PE line
])
def test_supported_lines(text, supported):
    version = versions.parse(text)
    assert version is not None and version.supported is supported


def test_a_line_newer_than_any_profile_names_the_newest_tested():
    with pytest.raises(PreconditionFailed) as refused:
        versions.require_supported("2027.2.0\n", "master.example.com")
    assert "newer than PE 2025.11, the newest line pe-ha is tested on" in refused.value.message


@pytest.mark.parametrize(("text", "databases"), [
    ("2021.7.9", ("pe-activity", "pe-classifier", "pe-orchestrator", "pe-rbac")),
    ("2025.0.0", ("pe-activity", "pe-classifier", "pe-orchestrator", "pe-rbac", "pe-inventory")),
])
def test_reinitialize_databases_per_line(text, databases):
    version = versions.parse(text)
    assert version is not None and version.reinitialize_databases == databases


@pytest.mark.parametrize(("text", "documented"), [("2019.5.0", True), ("2019.8.12", False), ("2025.11.0", False)])
def test_the_manual_copy_is_documented_up_to_2019_5(text, documented):
    version = versions.parse(text)
    assert version is not None and version.documents_manual_copy is documented


@pytest.mark.parametrize(("text", "keys"), [("2019.5.0", 0), ("2019.8.12", 1), ("2021.7.9", 3)])
def test_secret_keys_per_line(text, keys):
    version = versions.parse(text)
    assert version is not None and len(version.secret_key_files) == keys
