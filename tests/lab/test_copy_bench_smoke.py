"""CI's smoke test of the copy benchmark's code path (100 nodes, one run of the guide's commands and one of pe-ha's
fast copy): it checks equality, not speed. pe-ha's documented copy is the flow the other lab tests run."""

from __future__ import annotations

import os

import pytest

from lab import core
from lab.config import LabConfig

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("prefect_harness")]


def test_copy_benchmark_smoke(fresh_lab):
    from bench import copy

    # The split model: the pinning path runs, and every host is on every core again afterwards.
    assert copy.main(["--nodes", "100", "--runs", "1", "--links", "unlimited", "--cpus", "split", "--methods",
                      "documented,pe-ha-fast", "--reuse-lab"]) == 0
    cfg = LabConfig.load()
    every = core.cpu_models(os.cpu_count() or 1)["shared"]["master"]
    for host in (cfg.master, cfg.replica):
        pid = core.sh("ip", "netns", "pids", host.netns).stdout.split()[0]
        assert cpuset(core.sh("taskset", "-c", "-p", pid).stdout.split()[-1]) == cpuset(every)


def cpuset(text: str) -> set[int]:
    """``0,1`` or ``0-1`` (taskset prints either) as the set of cores."""
    cores: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cores |= set(range(int(first), int(last or first) + 1))
    return cores
