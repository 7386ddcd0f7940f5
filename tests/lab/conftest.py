"""The lab for integration tests: brought up once per session (hosts in netns, sshd, PostgreSQL, the PE simulator)."""

from __future__ import annotations

import os
import shutil

import pytest

from lab.config import LAB_DIR, LabConfig

LAB_AGENTS = 2


def _can_run_lab() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "unshare", "nsenter", "iptables", "openssl"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not os.path.exists("/usr/sbin/sshd") or not os.path.exists("/usr/lib/postgresql/15/bin/initdb"):
        return "needs openssh-server and postgresql-15 (make test installs them)"
    return None


# PostgreSQL as each configuration's first `up` left it, initialised and seeded; later ups copy it (about
# 6 s less each). One lab at a time (it is a singleton), so one directory, beside the lab's (on `make test`'s tmpfs).
SNAPSHOTS = LAB_DIR.parent / "pe-ha-lab-snapshots"


def lab_up(cfg: LabConfig) -> LabConfig:
    """The lab brought up as ``cfg``, its master's PuppetDB holding ``cfg.pdb_nodes`` nodes' data."""
    from lab import core, pdbgen

    core.up(cfg, verbose=False, seed=lambda c: pdbgen.generate(c, c.pdb_nodes, resources=200, reports=10),
            snapshots=SNAPSHOTS)
    return cfg


@pytest.fixture(scope="session")
def lab():
    reason = _can_run_lab()
    if reason:
        pytest.skip(reason)
    from lab import core

    shutil.rmtree(SNAPSHOTS, ignore_errors=True)
    cfg = lab_up(LabConfig(agents=LAB_AGENTS, sync_seconds=3, pdb_nodes=10))
    yield cfg
    core.down(verbose=False)
    shutil.rmtree(SNAPSHOTS, ignore_errors=True)


@pytest.fixture()
def fresh_lab(lab):
    """A lab in its initial state (re-created: about 3 s)."""
    return lab_up(lab)


def lab_settings(**overrides):
    from lab.core import lab_env
    from pe_ha.settings import load_settings

    saved = dict(os.environ)
    os.environ.update(lab_env())
    try:
        return load_settings(_env_file=None, **overrides)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture()
def lab_ctx(lab):
    """A run context pointed at the lab (real SSH, real HTTPS, real PostgreSQL), also given to flows."""
    from pe_ha import context

    with context.using(settings=lab_settings()) as ctx:
        yield ctx
