"""The README's production set-up, followed literally, for two installations sharing one Prefect server.

The README's shell block under "Server and worker as systemd services" runs line by line: its `set -a`
and `pe-ha setup` lines in bash, and each `systemctl enable --now UNIT` as systemd would run the unit
file from deployments/systemd (its Environment=, EnvironmentFile= and ExecStart=, with %i). Only paths
move to a scratch directory (/opt/pe-ha is this checkout) and the port to a free one. Nothing else is
exported: each process starts from PATH and HOME alone, plus what the README and the units set. Both
installations' settings files point at the lab.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from lab import core
from lab.stack import PrefectStack, WebhookReceiver, free_port

pytestmark = [pytest.mark.prefect, pytest.mark.lab]
ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deployments" / "systemd"
EU, US = "prod-eu", "prod-us"  # the README's example installation, and a second one


def readme_block(heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    block = section[section.index("```sh\n") + 6:]
    return [line for line in block[:block.index("```")].splitlines() if line.strip()]


@dataclass
class Machine:
    """The README's paths and port, moved into a scratch directory; the processes it started."""

    scratch: Path
    port: int
    processes: list[subprocess.Popen] = field(default_factory=list)

    def moved(self, text: str) -> str:
        return (text.replace("/opt/pe-ha", str(ROOT)).replace("/etc/pe-ha", str(self.scratch / "etc"))
                .replace("/var/lib/pe-ha", str(self.scratch / "var")).replace("4200", str(self.port)))

    def base_env(self) -> dict[str, str]:
        return {"PATH": os.environ["PATH"], "HOME": str(self.scratch / "home")}

    def shell(self, lines: list[str]) -> str:
        script = "set -e\n" + "\n".join(self.moved(line) for line in lines)
        r = subprocess.run(["bash", "-c", script], cwd=ROOT, env=self.base_env(), capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, f"{script}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def start_unit(self, unit: str) -> subprocess.Popen:
        """`systemctl enable --now UNIT`: the unit's [Service] environment and ExecStart, as systemd runs them."""
        name, _, instance = unit.partition("@")
        path = UNITS / (f"{name}@.service" if instance else f"{unit}.service")
        env, cwd, argv = self.base_env(), ROOT, None
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if not sep or line.startswith("#"):
                continue
            value = self.moved(value.replace("%i", instance))
            if key == "Environment":
                k, _, v = value.partition("=")
                env[k] = v
            elif key == "EnvironmentFile":
                for entry in Path(value).read_text().splitlines():
                    k, _, v = entry.partition("=")
                    env[k] = v[1:-1] if v[:1] == v[-1:] and v[:1] in "'\"" and len(v) > 1 else v
            elif key == "WorkingDirectory":
                cwd = Path(value)
            elif key == "ExecStart":
                argv = shlex.split(value)
        assert argv, f"{path} has no ExecStart"
        (self.scratch / "var" / "prefect").mkdir(parents=True, exist_ok=True)
        log = open(self.scratch / f"{unit}.log", "a")
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.processes.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def settings_file(machine: Machine, installation: str, webhook: str) -> None:
    """/etc/pe-ha/<installation>.env: the PEHA_* lines of the README's "Settings", pointing at the lab."""
    settings = {**core.lab_env(), "PEHA_INSTALLATION": installation, "PEHA_ALERT_WEBHOOK_URL": webhook,
                "PEHA_LOCK_WAIT_S": "5", "PEHA_HEALTH_INTERVAL_S": "86400",
                # Two installations never share a master in life; here they do, so each stages its own token.
                "PEHA_REMOTE_TOKEN_FILE": f"/root/.puppetlabs/pe-ha-{installation}.token"}
    etc = machine.scratch / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / f"{installation}.env").write_text("".join(f"{k}='{v}'\n" for k, v in settings.items()))


def wait_for_server(api: PrefectStack, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api.api}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the server unit did not answer within {timeout_s} s")


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_readme_production_set_up_serves_two_installations(fresh_lab, tmp_path):
    lines = readme_block("### Server and worker as systemd services")
    assert lines[0] == "cp deployments/systemd/*.service /etc/systemd/system/ && systemctl daemon-reload"
    machine = Machine(scratch=tmp_path, port=free_port())
    hook = WebhookReceiver(port=free_port()).start()
    api = PrefectStack(home=tmp_path / "client", port=machine.port)  # REST helpers only; it starts nothing
    try:
        for installation in (EU, US):
            settings_file(machine, installation, hook.url)
        # Line 1 installs the unit files, which start_unit reads from deployments/systemd. The server is
        # started once; the other lines run once per installation, with its name for the README's.
        for installation in (EU, US):
            shell_lines: list[str] = []
            for line in [*lines[1:], "systemctl enable --now (end)"]:
                line = line.replace(EU, installation)
                if not line.startswith("systemctl enable --now "):
                    shell_lines.append(line)
                    continue
                if shell_lines:
                    out = machine.shell(shell_lines)
                    assert f"lock pe-ha:{installation}: created" in out, out
                    assert f"verify-health/{installation} every 86400 s: created" in out, out
                    shell_lines = []
                unit = line.split()[-1]
                if unit == "(end)" or (unit == "pe-ha-server" and installation != EU):
                    continue
                machine.start_unit(unit)
                if unit == "pe-ha-server":
                    wait_for_server(api)

        core.node_run(fresh_lab.master, "pe-sim", "fault", "slow_command", '"provision"')
        core.node_run(fresh_lab.master, "pe-sim", "fault", "slow_seconds", "15")
        try:
            eu = api.create_run("provision-replica", EU, {"sync_timeout_s": 120})
            api.wait(eu["id"], 120, until={"RUNNING"})
            us = api.create_run("provision-replica", US, {"sync_timeout_s": 120})
            runs = {EU: api.wait(eu["id"], 300), US: api.wait(us["id"], 300)}
        finally:
            core.node_run(fresh_lab.master, "pe-sim", "fault", "clear")
        for installation, run in runs.items():
            assert run["state"]["type"] == "COMPLETED", api.explain(run["id"])
            assert run["work_queue_name"] == installation
        # The lock is per installation: the two provisions ran at the same time.
        a, b = runs[EU], runs[US]
        assert when(a["start_time"]) < when(b["end_time"]) and when(b["start_time"]) < when(a["end_time"])
        # Each run went to its installation's worker, and only there.
        for installation, other in ((EU, US), (US, EU)):
            log = (tmp_path / f"pe-ha-worker@{installation}.log").read_text()
            assert runs[installation]["id"] in log and runs[other]["id"] not in log
        for installation in (EU, US):
            health = api.wait(api.create_run("verify-health", installation, {"installation": installation})["id"], 120)
            assert health["state"]["type"] == "COMPLETED", api.explain(health["id"])
            assert re.fullmatch(rf"verify-health/{installation}", health["name"])
    finally:
        machine.stop()
        hook.stop()
