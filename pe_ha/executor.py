"""The remote executor seam: ``run(host, argv) -> CommandResult``, plus file transfer.

``Executor`` is the protocol flows and tasks depend on. ``FabricExecutor`` (in ``pe_ha.ssh``) is
production: SSH with strict host keys through fabric/paramiko, imported only when a flow first connects.
``FakeExecutor`` (in ``pe_ha.fake_executor``) records calls for tests, the way httpx's ``MockTransport``
stands in for the network.
"""


from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pe_ha.masking import mask

LineSink = Callable[[str, str, str], None]  # (host, stream, line)


@dataclass(frozen=True)
class CommandResult:
    host: str
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def command(self) -> str:
        return mask(shlex.join(self.argv))


class Executor(Protocol):
    """What flows and tasks need from a remote executor."""

    def run(
        self,
        host: str,
        argv: Iterable[str],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        ok_codes: Sequence[int] = (0,),
        stream: bool = True,
    ) -> CommandResult: ...

    def put(self, host: str, local_path: Path, remote_path: str, *, mode: int = 0o600) -> None: ...

    def put_bytes(self, host: str, data: bytes, remote_path: str, *, mode: int = 0o600) -> None: ...

    def get(self, host: str, remote_path: str, local_path: Path) -> None: ...

    def relay(self, src_host: str, src_path: str, dst_host: str, dst_path: str, *, chunk: int = 1 << 20) -> int: ...

    def open_session(self, host: str, argv: Iterable[str], *, timeout_s: float | None = None) -> RemoteSession: ...

    def step_started(self, procedure: str, step: str) -> None:
        """A procedure's step starts; the commands that follow are its (a fake records which step sent each)."""
        ...

    def close(self) -> None: ...


class RemoteSession(Protocol):
    """A command kept running on a host and spoken to through its stdin (e.g. one psql session whose
    transaction must stay open across several steps)."""

    def send(self, text: str) -> None: ...

    def read_until(self, marker: str, *, timeout_s: float) -> list[str]:
        """The stdout lines before the line ``marker``. Raises CommandFailed when the command ends first."""
        ...

    def close(self) -> None: ...
