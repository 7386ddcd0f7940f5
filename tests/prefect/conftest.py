"""Shared fixtures: the lab (from tests/lab) and one real Prefect stack per test module."""

from __future__ import annotations

import pytest

from lab import core
from lab.stack import PrefectStack, WebhookReceiver, free_port
from tests.lab.conftest import fresh_lab, lab, lab_ctx  # noqa: F401  (the lab fixtures, shared)


@pytest.fixture(scope="module")
def stack(lab, tmp_path_factory, request):  # noqa: F811  (the lab fixture, not the package)
    hook = WebhookReceiver(port=free_port()).start()
    env = core.lab_env()
    interval = getattr(request.module, "HEALTH_INTERVAL_S", 30)
    env.update({"PEHA_HEALTH_INTERVAL_S": str(interval), "PEHA_LOCK_WAIT_S": "3",
                "PEHA_APPROVAL_POLICY": getattr(request.module, "APPROVAL_POLICY", "any")})
    st = PrefectStack(home=tmp_path_factory.mktemp("prefect"), port=free_port(), extra_env=env)
    try:
        st.start_server()
        st.setup_and_deploy("lab", hook.url)
        st.start_worker("worker-1")
        st.hook = hook  # type: ignore[attr-defined]
        yield st
    finally:
        st.stop()
        hook.stop()


