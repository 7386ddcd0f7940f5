from __future__ import annotations

import pytest

from pe_ha.errors import CommandFailed, ConnectError
from pe_ha.executor import CommandResult
from pe_ha.fake_executor import FakeExecutor


def test_records_calls_and_answers_by_prefix(tmp_path):
    fake = FakeExecutor()
    fake.script("m.example.com", ("puppet", "infrastructure", "status"), stdout="[]")
    fake.script(None, ("nproc",), stdout="4")
    assert fake.run("m.example.com", ["puppet", "infrastructure", "status", "--format", "json"]).stdout == "[]"
    assert fake.run("r.example.com", ["nproc"]).stdout == "4"
    assert fake.run("r.example.com", ["true"]).exit_code == 0
    assert fake.commands_on("r.example.com") == [("nproc",), ("true",)]
    assert fake.transcript()[0] == "m.example.com: puppet infrastructure status --format json"


def test_sequences_failures_and_unreachable_hosts(tmp_path):
    fake = FakeExecutor()
    fake.sequence("a", ("puppet", "agent"), [CommandResult("a", (), 1, "", "locked", 0), CommandResult("a", (), 2, "", "", 0)])
    assert fake.run("a", ["puppet", "agent", "-t"], check=False).exit_code == 1
    assert fake.run("a", ["puppet", "agent", "-t"], ok_codes=(0, 2)).exit_code == 2
    assert fake.run("a", ["puppet", "agent", "-t"], ok_codes=(0, 2)).exit_code == 2  # last answer repeats
    fake.script("b", ("false",), exit_code=1, stderr="nope", times=1)
    with pytest.raises(CommandFailed, match="nope"):
        fake.run("b", ["false"])
    assert fake.run("b", ["false"]).exit_code == 0  # the one-time rule is used up
    fake.unreachable.add("c")
    with pytest.raises(ConnectError):
        fake.run("c", ["true"])
    assert [c.host for c in fake.calls][-1] == "c"


def test_file_operations(tmp_path):
    fake = FakeExecutor()
    f = tmp_path / "x"
    f.write_bytes(b"abc")
    fake.put("h", f, "/tmp/x")
    assert fake.relay("h", "/tmp/x", "g", "/tmp/y") == 3
    fake.get("g", "/tmp/y", tmp_path / "y")
    assert (tmp_path / "y").read_bytes() == b"abc"
