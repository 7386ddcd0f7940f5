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


def test_goals_are_judged_per_size_and_cpu_model():
    def row(nodes, cpus, method, ratio, unusable):
        return {"nodes": nodes, "cpus": cpus, "link": "unlimited", "method": method, "median_s": 10.0 * ratio,
                "ratio_vs_documented": ratio, "unusable_ratio": unusable}

    lines = copy_goals([row(1000, "split", "documented", 1.0, 1.0), row(1000, "split", "pe-ha-fast", 0.7, 0.04),
                        row(1000, "shared", "documented", 1.0, 1.0), row(1000, "shared", "pe-ha-fast", 0.7, 0.06),
                        row(4000, "split", "documented", 1.0, 1.0), row(4000, "split", "pe-ha-fast", 0.75, 0.03)])
    assert lines == [
        "goal: 1000 nodes, shared CPUs, unlimited: copy <= 0.8 of documented: 0.7 -> met",
        "goal: 1000 nodes, shared CPUs, unlimited: pe-puppetdb stopped <= 0.05 of documented: 0.06 -> MISSED",
        "goal: 1000 nodes, split CPUs, unlimited: copy <= 0.6 of documented: 0.7 -> MISSED",
        "goal: 1000 nodes, split CPUs, unlimited: pe-puppetdb stopped <= 0.05 of documented: 0.04 -> met",
        "goal: 4000 nodes, split CPUs, unlimited: copy <= 0.6 of documented: 0.75 -> MISSED",
        "goal: 4000 nodes, split CPUs, unlimited: pe-puppetdb stopped <= 0.05 of documented: 0.03 -> met",
        "goal: 4000 nodes, split CPUs, unlimited: ratio no worse than at 1000 nodes: 0.75 against 0.7 -> MISSED",
    ]


def test_the_plot_draws_time_against_size(tmp_path):
    from bench.copy import plot

    rows = [{"nodes": n, "cpus": c, "link": "unlimited", "method": m, "median_s": n / 100}
            for n in (250, 1000) for c in ("shared", "split") for m in ("documented", "pe-ha-fast")]
    path = plot(rows, tmp_path / "copy.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
