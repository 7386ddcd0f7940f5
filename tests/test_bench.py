"""The benchmarks' pure parts: the CPU models the copy benchmark pins hosts to, and how its goals are judged."""

from __future__ import annotations

import pytest

from bench.copy import copy_goals
from lab.core import cpu_models


@pytest.mark.parametrize(("cores", "split"), [
    (2, {"master": "0", "replica": "1"}),
    (4, {"master": "0-1", "replica": "2-3"}),
    (3, {"master": "0", "replica": "1-2"}),
])
def test_the_split_model_gives_each_host_its_own_cores(cores, split):
    models = cpu_models(cores)
    assert models["split"] == split
    assert models["shared"] == {"master": f"0-{cores - 1}", "replica": f"0-{cores - 1}"}


def test_one_core_offers_only_the_shared_model():
    assert cpu_models(1) == {"shared": {"master": "0", "replica": "0"}}


def test_goals_are_judged_per_cpu_model():
    def row(cpus, method, ratio, unusable):
        return {"cpus": cpus, "link": "unlimited", "method": method, "median_s": 10.0 * ratio,
                "ratio_vs_documented": ratio, "unusable_ratio": unusable}

    lines = copy_goals([row("split", "documented", 1.0, 1.0), row("split", "pe-ha-fast", 0.7, 0.04),
                        row("shared", "documented", 1.0, 1.0), row("shared", "pe-ha-fast", 0.7, 0.06)])
    assert lines == [
        "goal: shared CPUs, unlimited copy <= 0.8 of documented: 0.7 -> met",
        "goal: shared CPUs, unlimited pe-puppetdb stopped <= 0.05 of documented: 0.06 -> MISSED",
        "goal: split CPUs, unlimited copy <= 0.6 of documented: 0.7 -> MISSED",
        "goal: split CPUs, unlimited pe-puppetdb stopped <= 0.05 of documented: 0.04 -> met",
    ]
