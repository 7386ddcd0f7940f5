"""A registered secret never reaches Prefect: not through a flow's or a task's run logger, not through
pe-ha's own loggers, not through an exception's message or traceback. Searched for in the Prefect
database file and through the API, after a real (test-harness) flow run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pe_ha.errors import CommandFailed
from pe_ha.masking import install_log_masking, register_secret

pytestmark = [pytest.mark.usefixtures("prefect_harness")]
SECRET = "tok-" + "c0ffee" * 6  # as an RBAC token looks in the logs


def _database_file() -> Path | None:
    from prefect.settings import get_current_settings

    url = str(get_current_settings().server.database.connection_url.get_secret_value())
    return Path(url.split("///", 1)[1]) if "sqlite" in url and "///" in url else None


def test_a_registered_secret_reaches_no_log_state_or_database():
    from prefect import flow, get_run_logger, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    register_secret(SECRET)
    install_log_masking()

    @task(retries=0)
    def leaky_task() -> None:
        get_run_logger().info("task sees %s", SECRET)  # prefect.task_runs
        logging.getLogger("pe_ha.remote").warning("remote output: %s", SECRET)
        try:
            raise RuntimeError(f"inner failure with {SECRET}")
        except RuntimeError:
            get_run_logger().exception("traceback follows")
        raise CommandFailed(host="master.example.com", command=f"curl -H 'X-Authentication: {SECRET}'",
                            exit_code=1, output=f"denied for {SECRET}")

    @flow(name="pe-ha-masking-check")
    def leaky_flow() -> None:
        get_run_logger().info("flow sees %s", SECRET)  # prefect.flow_runs
        leaky_task()

    state = leaky_flow(return_state=True)
    assert state.is_failed()
    APILogWorker.drain_all(timeout=10)

    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
        task_runs = client.read_task_runs()
    messages = [log.message for log in logs]
    assert any("flow sees ********" in m for m in messages)
    assert any("task sees ********" in m for m in messages)
    assert any("traceback follows" in m and "inner failure with ********" in m for m in messages)
    texts = messages + [flow_run.state.message or ""] + [t.state.message or "" for t in task_runs if t.state]
    assert sum(SECRET in t for t in texts) == 0
    db = _database_file()
    if db is not None and db.exists():
        assert SECRET.encode() not in db.read_bytes()
        wal = db.with_name(db.name + "-wal")
        assert not wal.exists() or SECRET.encode() not in wal.read_bytes()
