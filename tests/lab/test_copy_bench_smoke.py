"""CI's smoke test of the copy benchmark's code path (200 nodes, one run each): it checks equality, not speed."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_harness")]


def test_copy_benchmark_smoke(fresh_lab):
    from bench import copy

    assert copy.main(["--nodes", "200", "--runs", "1", "--links", "unlimited", "--methods",
                      "documented,pe-ha-fast,pe-ha-documented", "--reuse-lab"]) == 0
