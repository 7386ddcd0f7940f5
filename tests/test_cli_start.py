"""`pe-ha run --token-file`: a run held for its starter's login is never left behind when the login cannot be
recorded (it would start a day later, unattended)."""

from __future__ import annotations

import types

import pytest

from deployments import cli


class HeldRunClient:
    def __init__(self, fail_on: str):
        self.fail_on, self.deleted, self.states = fail_on, [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def create_flow_run_from_deployment(self, deployment_id, parameters, **held):
        assert "state" in held  # held: scheduled a day ahead until released
        return types.SimpleNamespace(id="run-1", name="forget-replica/r")

    def create_flow_run_input(self, run_id, key, value):
        if self.fail_on == "input":
            raise RuntimeError("HTTP 503 database is locked")

    def set_flow_run_state(self, run_id, state, force=False):
        if self.fail_on == "release":
            raise RuntimeError("HTTP 503 database is locked")
        self.states.append(state.type.value)

    def delete_flow_run(self, run_id):
        self.deleted.append(run_id)


@pytest.mark.parametrize("fail_on", ["input", "release"])
def test_a_held_run_whose_starter_cannot_be_recorded_is_deleted(monkeypatch, fail_on):
    client = HeldRunClient(fail_on)
    monkeypatch.setattr(cli, "_client", lambda: client)
    monkeypatch.setattr(cli, "_deployment", lambda c, procedure, installation: types.SimpleNamespace(id="dep-1"))
    with pytest.raises(SystemExit, match="the held run run-1 was deleted and nothing ran"):
        cli.start("forget-replica", {}, installation="lab", started_by="alice")
    assert client.deleted == ["run-1"]


def test_a_recorded_starter_releases_the_run(monkeypatch, capsys):
    client = HeldRunClient("nothing")
    monkeypatch.setattr(cli, "_client", lambda: client)
    monkeypatch.setattr(cli, "_deployment", lambda c, procedure, installation: types.SimpleNamespace(id="dep-1"))
    assert cli.start("forget-replica", {}, installation="lab", started_by="alice") == "run-1"
    assert client.states == ["SCHEDULED"] and client.deleted == []
    assert "by PE user alice" in capsys.readouterr().out
