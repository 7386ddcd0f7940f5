"""Production's executor: SSH to PE nodes with strict host keys through fabric/paramiko.
Why not ``fabric.Connection.run``: it ignores Prefect timeouts and cancellation and waits for the
remote command to finish. Here every command is

* bounded on the host by ``timeout -k`` (so a lost worker cannot leave it running forever),
* run on a pty from a polling loop in the calling thread, so a Prefect timeout or cancellation
  interrupts it; on the way out the channel is closed (the pty hangs up) and the remote process group
  is killed explicitly,
* run in a full root environment (``sudo puppet infrastructure`` is not enough for PE): HOME, USER,
  LOGNAME, LANG and PATH are set, through ``sudo -n`` when the login user is not root.

Output is streamed line by line to a callback (by default the Prefect run logger), masked.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import shlex
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from fabric import Config, Connection

from pe_ha.errors import CommandFailed, ConfigurationError, ConnectError, RemoteTimeout, TransferError
from pe_ha.executor import CommandResult, LineSink
from pe_ha.masking import mask
from pe_ha.remote_shell import _ERR_MARK, _PID_MARK, _quiet_sink, default_line_sink, root_session
from pe_ha.settings import HostSettings, Settings

_LOCAL_GRACE_S = 10


@dataclass
class FabricExecutor:
    """SSH to PE nodes with fabric/paramiko. One cached connection per host."""

    settings: Settings
    line_sink: LineSink = default_line_sink
    _connections: dict[str, Connection] = field(default_factory=dict)

    # -- connections ----------------------------------------------------------------------------------

    def _host(self, name: str) -> HostSettings:
        return self.settings.host(name)

    def connection(self, name: str) -> Connection:
        conn = self._connections.get(name)
        if conn is not None and conn.is_connected:
            return conn
        entry = self._host(name)
        timeout = max(1, math.ceil(self.settings.ssh_connect_timeout_s))
        conn = Connection(
            host=entry.ssh_address,
            user=entry.user,
            port=entry.port,
            connect_timeout=timeout,
            config=Config(overrides={"load_ssh_configs": False}),
            connect_kwargs={
                "key_filename": str(self.settings.ssh_key_file),
                "look_for_keys": False,
                "allow_agent": False,
                "banner_timeout": timeout,
                "auth_timeout": timeout,
                "channel_timeout": timeout,
            },
        )
        # Strict host keys: only the configured known_hosts file, and unknown keys are refused.
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            conn.client.load_host_keys(str(self.settings.ssh_known_hosts_file))
        except OSError as exc:  # checked at the run's start; gone or unreadable since
            raise ConfigurationError("PEHA_SSH_KNOWN_HOSTS_FILE", f"{self.settings.ssh_known_hosts_file} cannot be read "
                                     f"({exc.strerror or exc})") from None
        try:
            conn.open()
            transport = conn.client.get_transport()
            if transport is not None:
                transport.set_keepalive(5)
        except TimeoutError as exc:
            raise ConnectError(f"SSH connect timed out after {timeout} s ({exc})", host=name,
                               hint="check that the host is up and port 22 is reachable from the worker") from None
        except paramiko.BadHostKeyException:
            raise ConnectError("SSH host key does not match known_hosts", host=name,
                               hint="verify the host's identity, then update PEHA_SSH_KNOWN_HOSTS_FILE") from None
        except paramiko.SSHException as exc:
            raise ConnectError(f"SSH connection failed: {exc}", host=name,
                               hint="check the host key in known_hosts, the key file and that the host answers") from None
        except OSError as exc:
            raise ConnectError(f"SSH connection failed: {exc.strerror or exc}", host=name) from None
        self._connections[name] = conn
        return conn

    def step_started(self, procedure: str, step: str) -> None:
        """Nothing to do over SSH: each command is logged with its host as it runs."""

    def close(self) -> None:
        for conn in self._connections.values():
            try:
                conn.close()
            except Exception:  # closing a dead connection is best effort
                pass
        self._connections.clear()

    def _drop(self, name: str) -> None:
        conn = self._connections.pop(name, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken
                pass

    # -- run ------------------------------------------------------------------------------------------

    def run(
        self,
        host: str,
        argv: Iterable[str],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        ok_codes: Sequence[int] = (0,),
        stream: bool = True,
    ) -> CommandResult:
        argv = tuple(argv)
        sink = self.line_sink if stream else _quiet_sink
        limit = float(timeout_s if timeout_s is not None else self.settings.command_timeout_s)
        entry = self._host(host)
        line = root_session(argv, login_user=entry.user, lang=self.settings.remote_lang,
                            path=self.settings.remote_path, timeout_s=limit)
        conn = self.connection(host)
        started = time.monotonic()
        try:
            transport = conn.client.get_transport()
            if transport is None or not transport.is_active():
                raise paramiko.SSHException("transport is not active")
            chan = transport.open_session(timeout=self.settings.ssh_connect_timeout_s)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._drop(host)
            raise ConnectError(f"could not open an SSH session: {exc}", host=host) from None
        out_lines: list[str] = []
        err_lines: list[str] = []
        pgid: int | None = None
        finished = False
        try:
            chan.get_pty(term="dumb", width=400, height=50)
            chan.exec_command(line)
            buffer = b""
            deadline = started + limit + _LOCAL_GRACE_S
            last_heard = time.monotonic()
            probe_every = max(10.0, 3 * self.settings.ssh_connect_timeout_s)
            while True:
                readable, _, _ = select.select([chan], [], [], 0.2)
                if readable:
                    data = chan.recv(65536)
                    if not data:
                        break
                    buffer += data
                    last_heard = time.monotonic()
                    *complete, buffer = buffer.split(b"\n")
                    for raw in complete:
                        pgid = self._emit(host, raw, out_lines, err_lines, pgid, sink)
                elif time.monotonic() - last_heard > probe_every:
                    # A silent command, or a dead link (a cut-off host never resets TCP)? Ask the server for a
                    # channel: it answers within the connect timeout if the link is alive.
                    self._probe_link(host, transport)
                    last_heard = time.monotonic()
                if time.monotonic() > deadline:
                    raise RemoteTimeout(f"`{mask(shlex.join(argv))}` did not finish in {limit:g} s; killed",
                                        host=host)
                if transport.is_active() is False:
                    raise ConnectError("SSH connection dropped while the command ran", host=host,
                                       hint="the command may have been cut off; check the host before re-running")
            if buffer:
                pgid = self._emit(host, buffer, out_lines, err_lines, pgid, sink)
            exit_code = chan.recv_exit_status()
            finished = True
        finally:
            if not finished:
                # Timeout, cancellation (Prefect raises in this thread) or a dropped link: make sure
                # nothing keeps running on the host.
                self._kill_remote(host, chan, pgid)
            else:
                chan.close()
        duration = time.monotonic() - started
        if exit_code == -1:
            self._drop(host)
            raise ConnectError("SSH session ended without an exit status (connection lost?)", host=host,
                               hint="the command may have been cut off; check the host before re-running")
        result = CommandResult(host, argv, exit_code, "\n".join(out_lines), "\n".join(err_lines), duration)
        if exit_code in (124, 137) and duration >= limit - 1:
            raise RemoteTimeout(f"`{result.command}` did not finish in {limit:g} s and was killed on the host",
                                host=host)
        if check and exit_code not in ok_codes:
            raise CommandFailed(host=host, command=result.command, exit_code=exit_code,
                                output=mask("\n".join(err_lines[-8:] + out_lines[-8:])))
        return result

    def open_session(self, host: str, argv: Iterable[str], *, timeout_s: float | None = None) -> FabricSession:
        """Start ``argv`` in a root session and keep it running; no pty, so what is sent is never echoed."""
        argv = tuple(argv)
        limit = float(timeout_s if timeout_s is not None else self.settings.command_timeout_s)
        entry = self._host(host)
        line = root_session(argv, login_user=entry.user, lang=self.settings.remote_lang,
                            path=self.settings.remote_path, timeout_s=limit)
        conn = self.connection(host)
        try:
            transport = conn.client.get_transport()
            if transport is None or not transport.is_active():
                raise paramiko.SSHException("transport is not active")
            chan = transport.open_session(timeout=self.settings.ssh_connect_timeout_s)
            chan.set_combine_stderr(True)
            chan.exec_command(line)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._drop(host)
            raise ConnectError(f"could not open an SSH session: {exc}", host=host) from None
        return FabricSession(self, host, argv, chan)

    def _probe_link(self, host: str, transport: paramiko.Transport) -> None:
        try:
            probe = transport.open_session(timeout=self.settings.ssh_connect_timeout_s)
            probe.close()
        except (paramiko.SSHException, OSError, EOFError):
            raise ConnectError("lost contact with the host while a command ran (no answer to an SSH probe)", host=host,
                               hint="the command's outcome is unknown: check the host before re-running") from None

    def _emit(self, host: str, raw: bytes, out: list[str], err: list[str], pgid: int | None,
              sink: LineSink) -> int | None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        if pgid is None and text.startswith(_PID_MARK):
            try:
                return int(text[len(_PID_MARK):].strip())
            except ValueError:
                return pgid
        if text.startswith(_ERR_MARK):
            text = text[len(_ERR_MARK):]
            err.append(text)
            sink(host, "stderr", text)
        else:
            out.append(text)
            sink(host, "stdout", text)
        return pgid

    def _kill_remote(self, host: str, chan: paramiko.Channel, pgid: int | None) -> None:
        try:
            chan.close()  # the pty hangs up: timeout(1) forwards SIGHUP to the command's group
        except Exception:  # the channel may already be gone
            pass
        if pgid is None:
            return
        try:
            transport = self.connection(host).client.get_transport()
            if transport is None:
                return
            kill = transport.open_session(timeout=self.settings.ssh_connect_timeout_s)
            prefix = "" if self._host(host).user == "root" else "sudo -n "
            kill.exec_command(f"{prefix}kill -TERM -- -{pgid} 2>/dev/null; sleep 1; {prefix}kill -KILL -- -{pgid} 2>/dev/null; true")
            kill.recv_exit_status()
            kill.close()
        except Exception:  # the host may be unreachable; timeout -k on the host still bounds the command
            logging.getLogger("pe_ha.remote").warning("could not confirm the kill of process group %s on %s", pgid, host)

    # -- files ----------------------------------------------------------------------------------------

    def put(self, host: str, local_path: Path, remote_path: str, *, mode: int = 0o600) -> None:
        try:
            sftp = self.connection(host).sftp()
            tmp = f"{remote_path}.pe-ha-partial"
            sftp.put(str(local_path), tmp)
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, remote_path)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            self._drop(host)
            raise TransferError(f"upload of {local_path} to {remote_path} failed: {exc}", host=host) from None

    def put_bytes(self, host: str, data: bytes, remote_path: str, *, mode: int = 0o600) -> None:
        """Write ``data`` to ``remote_path`` atomically with ``mode`` (never passes through argv or logs)."""
        try:
            sftp = self.connection(host).sftp()
            tmp = f"{remote_path}.pe-ha-partial"
            with sftp.open(tmp, "wb") as handle:
                handle.chmod(mode)
                handle.write(data)
            sftp.posix_rename(tmp, remote_path)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            self._drop(host)
            raise TransferError(f"write of {remote_path} failed: {exc}", host=host) from None

    def get(self, host: str, remote_path: str, local_path: Path) -> None:
        try:
            self.connection(host).sftp().get(remote_path, str(local_path))
        except (OSError, paramiko.SSHException, EOFError) as exc:
            self._drop(host)
            raise TransferError(f"download of {remote_path} failed: {exc}", host=host) from None

    def relay(self, src_host: str, src_path: str, dst_host: str, dst_path: str, *, chunk: int = 1 << 20) -> int:
        """Copy a file between two hosts through the worker (no direct trust between the hosts needed)."""
        try:
            src = self.connection(src_host).sftp()
            dst = self.connection(dst_host).sftp()
            size = src.stat(src_path).st_size or 0
            tmp = f"{dst_path}.pe-ha-partial"
            copied = 0
            with src.open(src_path, "rb") as reader, dst.open(tmp, "wb") as writer:
                reader.prefetch(size)
                writer.set_pipelined(True)
                while data := reader.read(chunk):
                    writer.write(data)
                    copied += len(data)
            dst.posix_rename(tmp, dst_path)
            return copied
        except (OSError, paramiko.SSHException, EOFError) as exc:
            self._drop(src_host)
            self._drop(dst_host)
            raise TransferError(f"copy {src_host}:{src_path} -> {dst_host}:{dst_path} failed: {exc}",
                                host=dst_host) from None


class FabricSession:
    """One running remote command (``FabricExecutor.open_session``). Thread-safe: one exchange at a time."""

    def __init__(self, executor: FabricExecutor, host: str, argv: tuple[str, ...], chan: paramiko.Channel) -> None:
        self.executor, self.host, self.argv, self.chan = executor, host, argv, chan
        self._buffer = b""
        self._errors: list[str] = []
        self._pgid: int | None = None
        self._lock = threading.Lock()

    def send(self, text: str) -> None:
        try:
            self.chan.sendall(text.encode())
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise ConnectError(f"lost the session running `{mask(shlex.join(self.argv))}`: {exc}", host=self.host) from None

    def read_until(self, marker: str, *, timeout_s: float) -> list[str]:
        with self._lock:
            out: list[str] = []
            deadline = time.monotonic() + timeout_s
            while True:
                while b"\n" in self._buffer:
                    raw, self._buffer = self._buffer.split(b"\n", 1)
                    text = raw.decode("utf-8", errors="replace").rstrip("\r")
                    if self._pgid is None and text.startswith(_PID_MARK):
                        with contextlib.suppress(ValueError):
                            self._pgid = int(text[len(_PID_MARK):].strip())
                    elif text.startswith(_ERR_MARK):
                        self._errors.append(text[len(_ERR_MARK):])
                        _quiet_sink(self.host, "stderr", text[len(_ERR_MARK):])
                    elif text == marker:
                        return out
                    else:
                        out.append(text)
                if time.monotonic() > deadline:
                    self.close()
                    raise RemoteTimeout(f"`{mask(shlex.join(self.argv))}` gave no answer in {timeout_s:g} s; ended",
                                        host=self.host)
                readable, _, _ = select.select([self.chan], [], [], 0.2)
                if not readable:
                    continue
                data = self.chan.recv(65536)
                if not data:
                    # The exit status follows the end of output in its own message: wait for it, bounded.
                    settle = time.monotonic() + 5
                    while not self.chan.exit_status_ready() and time.monotonic() < settle:
                        time.sleep(0.02)
                    code = self.chan.recv_exit_status() if self.chan.exit_status_ready() else -1
                    raise CommandFailed(host=self.host, command=mask(shlex.join(self.argv)), exit_code=code,
                                        output=mask("\n".join(self._errors[-8:] + out[-8:])))
                self._buffer += data

    def close(self) -> None:
        """End of input, then the command has 2 s to finish; else its process group is killed on the host."""
        try:
            self.chan.shutdown_write()
            deadline = time.monotonic() + 2
            while not self.chan.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.chan.exit_status_ready():
                self.chan.close()
                return
        except (OSError, paramiko.SSHException, EOFError):
            pass
        self.executor._kill_remote(self.host, self.chan, self._pgid)


def private_file_mode_ok(path: Path) -> bool:
    """True when a local secret file is not readable by group or others."""
    return not (os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))
