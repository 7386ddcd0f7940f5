"""The simulator answers with the same keys and value types as PE's documented samples. Where they disagree,
the simulator changes (docs/simulator.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab]
SAMPLES = Path(__file__).parent / "samples"


def same_shape(sample, actual, path="$") -> list[str]:
    problems = []
    if isinstance(sample, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {type(actual).__name__}"]
        for key in sample.keys() - actual.keys():
            problems.append(f"{path}.{key}: missing")
        for key in actual.keys() - sample.keys():
            problems.append(f"{path}.{key}: not in PE's sample")
        for key in sample.keys() & actual.keys():
            problems += same_shape(sample[key], actual[key], f"{path}.{key}")
    elif sample is None or actual is None:
        return []
    elif type(sample) is not type(actual) and not (isinstance(sample, int | float) and isinstance(actual, int | float)):
        problems.append(f"{path}: {type(sample).__name__} in PE's sample, {type(actual).__name__} from the simulator")
    return problems


def test_token_authenticate_matches_pes_body(lab, lab_ctx):
    sample = json.loads((SAMPLES / "rbac-authenticate-200.json").read_text())
    actual = lab_ctx.api.authenticate(lab_ctx.settings.rbac_token())
    assert same_shape(sample, actual) == []


def test_status_service_entries_match_pes_body(lab, lab_ctx):
    sample = json.loads((SAMPLES / "status-services-4433-200.json").read_text())
    response = lab_ctx.api.request("GET", lab_ctx.settings.master.name, 4433, "/status/v1/services?level=info")
    actual = response.json()
    assert set(sample) - {"status-service"} <= set(actual)
    for name in set(sample) & set(actual) - {"status-service"}:
        problems = [p for p in same_shape(sample[name], actual[name])
                    if not p.startswith("$.status.")]  # each service's status detail is its own
        assert problems == [], name
