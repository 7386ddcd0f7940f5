"""The fabric executor against a real sshd on 127.0.0.1 started by the tests."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pe_ha.errors import CommandFailed, ConfigurationError, ConnectError, RemoteTimeout
from pe_ha.ssh import FabricExecutor
from tests.conftest import make_settings

pytestmark = pytest.mark.ssh


@pytest.fixture()
def executor(local_sshd, tmp_path):
    lines: list[tuple[str, str, str]] = []
    settings = make_settings(
        tmp_path,
        master={"name": "local.test", "address": "127.0.0.1", "port": local_sshd["port"]},
        replica=None,
        managed_nodes=[{"name": "blackhole.test", "address": "198.51.100.1", "port": 22}],
        ssh_key_file=local_sshd["key"],
        ssh_known_hosts_file=local_sshd["known_hosts"],
        ssh_connect_timeout_s=2,
    )
    ex = FabricExecutor(settings, line_sink=lambda h, s, line: lines.append((h, s, line)))
    ex.lines = lines  # type: ignore[attr-defined]
    yield ex
    ex.close()


def test_root_session_environment(executor):
    result = executor.run("local.test", ["bash", "-c", 'echo "$USER|$HOME|$LOGNAME|$LANG|$PATH"; id -u'])
    user, home, logname, lang, path = result.stdout.splitlines()[0].split("|")
    assert (user, home, logname, lang) == ("root", "/root", "root", "C.UTF-8")
    assert path.startswith("/opt/puppetlabs/bin:")
    assert result.stdout.splitlines()[1] == "0"


def test_streams_stdout_and_stderr_separately(executor):
    result = executor.run("local.test", ["bash", "-c", "echo one; echo oops >&2; echo two"])
    assert result.stdout.splitlines() == ["one", "two"]
    assert result.stderr.splitlines() == ["oops"]
    streamed = [(s, line) for _, s, line in executor.lines]
    assert ("stdout", "one") in streamed and ("stderr", "oops") in streamed and ("stdout", "two") in streamed


def test_arguments_are_quoted_at_the_boundary(executor):
    tricky = "a b; echo INJECTED $(id) 'q' \"dq\""
    result = executor.run("local.test", ["printf", "%s\\n", tricky])
    assert result.stdout == tricky


def test_non_zero_exit(executor):
    with pytest.raises(CommandFailed) as info:
        executor.run("local.test", ["bash", "-c", "echo bad >&2; exit 3"])
    assert info.value.exit_code == 3 and "bad" in str(info.value)
    result = executor.run("local.test", ["bash", "-c", "exit 2"], check=False)
    assert result.exit_code == 2
    assert executor.run("local.test", ["bash", "-c", "exit 2"], ok_codes=(0, 2)).exit_code == 2


def test_connect_timeout_is_bounded(executor):
    # Ended by the 2 s setting, never by the kernel's own ~135 s connect timeout: the TCP connect's timeout, or,
    # where something on the path accepts the connection, the banner's (also the setting)
    with pytest.raises(ConnectError, match=r"SSH connect timed out after 2 s|Error reading SSH protocol banner"):
        executor.run("blackhole.test", ["true"])


def test_a_known_hosts_file_gone_since_the_start_is_named_by_its_setting(local_sshd, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_bytes(Path(local_sshd["known_hosts"]).read_bytes())
    settings = make_settings(tmp_path, master={"name": "local.test", "address": "127.0.0.1", "port": local_sshd["port"]},
                             replica=None, ssh_key_file=local_sshd["key"], ssh_known_hosts_file=known_hosts)
    known_hosts.unlink()  # after the settings' own check, as when the file is replaced mid-run
    ex = FabricExecutor(settings)
    try:
        with pytest.raises(ConfigurationError, match=f"setting PEHA_SSH_KNOWN_HOSTS_FILE: {known_hosts} cannot be read"):
            ex.run("local.test", ["true"])
    finally:
        ex.close()


def _remote_alive(executor, marker: str) -> bool:
    result = executor.run("local.test", ["pgrep", "-f", "^" + marker], check=False)
    return result.exit_code == 0


def test_command_timeout_kills_remote_process(executor):
    with pytest.raises(RemoteTimeout):
        executor.run("local.test", ["bash", "-c", "sleep 77.123; echo never"], timeout_s=1)
    time.sleep(0.5)
    assert not _remote_alive(executor, "sleep 77.123")


def test_interrupt_kills_remote_process(executor):
    """A Prefect timeout/cancellation raises in the running thread; the remote command must die."""
    main = threading.main_thread().ident
    timer = threading.Timer(1.0, lambda: signal.pthread_kill(main, signal.SIGUSR1))

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted()

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        timer.start()
        with pytest.raises(Interrupted):
            executor.run("local.test", ["bash", "-c", "sleep 88.456"], timeout_s=60)
    finally:
        signal.signal(signal.SIGUSR1, old)
    time.sleep(1.5)
    assert not _remote_alive(executor, "sleep 88.456")


def test_file_transfer_round_trip(executor, tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(bytes(range(256)) * 4096)
    executor.put("local.test", src, "/tmp/pe-ha-test-payload.bin", mode=0o600)
    digest = executor.run("local.test", ["sha256sum", "/tmp/pe-ha-test-payload.bin"]).stdout.split()[0]
    local = subprocess.run(["sha256sum", str(src)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert digest == local
    mode = executor.run("local.test", ["stat", "-c", "%a", "/tmp/pe-ha-test-payload.bin"]).stdout.strip()
    assert mode == "600"
    back = tmp_path / "back.bin"
    executor.get("local.test", "/tmp/pe-ha-test-payload.bin", back)
    assert Path(back).read_bytes() == src.read_bytes()
    executor.run("local.test", ["rm", "-f", "/tmp/pe-ha-test-payload.bin"])


def test_last_stderr_line_is_kept_and_a_daemon_holding_stderr_does_not_hang_the_run(executor):
    # The stderr tagger must finish before the session ends (a lost last line hid error messages under
    # load), but a background process that inherits stderr must not hold the run until its timeout.
    script = "sleep 300 </dev/null >/dev/null & echo \"started $!\"; echo 'final words' >&2"
    result = executor.run("local.test", ["bash", "-c", script], timeout_s=60)
    started, pid = result.stdout.split()
    assert started == "started" and pid.isdigit()
    assert result.stderr.splitlines() == ["final words"]
    executor.run("local.test", ["kill", pid], check=False)  # that one process: never a pattern machine-wide


# -- sessions (pe_ha.psql speaks to psql through one) ------------------------------------------------


def test_session_answers_each_exchange_in_order_and_ends_with_its_input(executor):
    session = executor.open_session("local.test", ["bash", "-c", 'while read -r line; do echo "got $line"; done'])
    try:
        session.send("one\nEND-1\n")
        assert session.read_until("got END-1", timeout_s=10) == ["got one"]
        session.send("two\nthree\nEND-2\n")
        assert session.read_until("got END-2", timeout_s=10) == ["got two", "got three"]
    finally:
        session.close()
    time.sleep(0.3)
    assert not _remote_alive(executor, "bash -c while read")


def test_session_that_ends_early_raises_with_its_error_output(executor):
    session = executor.open_session("local.test", ["bash", "-c", "read -r line; echo 'ERROR: relation missing' >&2; exit 3"])
    try:
        session.send("SELECT 1;\n")
        with pytest.raises(CommandFailed) as info:
            session.read_until("never", timeout_s=10)
    finally:
        session.close()
    assert info.value.exit_code == 3 and "relation missing" in info.value.output


def test_session_without_an_answer_times_out_and_is_killed(executor):
    session = executor.open_session("local.test", ["bash", "-c", "sleep 66.789"])
    with pytest.raises(RemoteTimeout):
        session.read_until("never", timeout_s=1)
    time.sleep(1.5)
    assert not _remote_alive(executor, "sleep 66.789")
