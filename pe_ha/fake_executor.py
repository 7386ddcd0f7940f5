"""A scripted, recording stand-in for the SSH executor (like httpx's ``MockTransport``).

Tests script answers by host and argv prefix, then assert the exact per-host command sequence::

    fake = FakeExecutor()
    fake.script("master.example.com", ("puppet", "infrastructure", "status"), stdout="[]")
    ...
    assert fake.commands_on("master.example.com") == [...]
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pe_ha import commands
from pe_ha.errors import CommandFailed, ConnectError, PeHaError
from pe_ha.executor import CommandResult
from pe_ha.masking import mask

Responder = Callable[[str, tuple[str, ...]], "CommandResult | PeHaError"]
SqlResponder = Callable[[str, str], "list[str] | PeHaError"]  # (host, what was sent) -> the lines it answers


@dataclass
class _Rule:
    host: str | None
    prefix: tuple[str, ...]
    answers: list[CommandResult | PeHaError | Responder]
    repeat_last: bool


@dataclass
class Call:
    host: str
    argv: tuple[str, ...]
    kind: str = "run"  # run | put | get | session | sql
    step: str = ""  # the step of the outermost procedure that sent it (a subflow's commands belong to its step)
    timeout_s: float | None = None  # the bound the caller gave (None: the executor's default)

    def __str__(self) -> str:
        return f"{self.host}: {shlex.join(self.argv)}"


@dataclass
class FakeExecutor:
    """Records every call; answers from scripted rules (first match wins), default exit 0."""

    calls: list[Call] = field(default_factory=list)
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)
    pe_version: str = "2019.8.12"  # what an unscripted `cat /opt/puppetlabs/server/pe_version` answers
    session_responder: SqlResponder | None = None  # answers what is sent to an open session; default: no lines
    current_step: str = ""
    outermost_procedure: str = ""
    _rules: list[_Rule] = field(default_factory=list)

    def step_started(self, procedure: str, step: str) -> None:
        """The first procedure seen is the outermost: a subflow's steps (the copy inside provisioning) belong to the
        outer step that started it."""
        self.outermost_procedure = self.outermost_procedure or procedure
        if procedure == self.outermost_procedure:
            self.current_step = step

    def script(
        self,
        host: str | None,
        prefix: Sequence[str],
        *,
        stdout: str = "",
        stderr: str = "",
        exit_code: int = 0,
        error: PeHaError | None = None,
        responder: Responder | None = None,
        times: int | None = None,
        override: bool = False,
    ) -> None:
        """Answer commands on ``host`` (None = any) starting with ``prefix``.

        ``times=None`` answers forever; ``times=n`` answers n times, then falls through to later rules.
        ``override`` puts the rule before those scripted so far.
        """
        answer: CommandResult | PeHaError | Responder
        if responder is not None:
            answer = responder
        elif error is not None:
            answer = error
        else:
            answer = CommandResult(host or "*", tuple(prefix), exit_code, stdout, stderr, 0.0)
        rule = _Rule(host, tuple(prefix), [answer] * (times or 1), times is None)
        self._rules.insert(0 if override else len(self._rules), rule)

    def sequence(self, host: str | None, prefix: Sequence[str], answers: Sequence[CommandResult | PeHaError]) -> None:
        """Answer successive matching calls with ``answers`` in order, repeating the last one."""
        self._rules.append(_Rule(host, tuple(prefix), list(answers), True))

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
        self.calls.append(Call(host, argv, step=self.current_step, timeout_s=timeout_s))
        if host in self.unreachable:
            raise ConnectError("SSH connect timed out (fake)", host=host)
        answer = self._answer(host, argv)
        if callable(answer) and not isinstance(answer, CommandResult | PeHaError):
            answer = answer(host, argv)
        if isinstance(answer, PeHaError):
            raise answer
        result = CommandResult(host, argv, answer.exit_code, answer.stdout, answer.stderr, 0.0)
        if check and result.exit_code not in ok_codes:
            raise CommandFailed(host=host, command=mask(shlex.join(argv)), exit_code=result.exit_code,
                                output=result.stderr or result.stdout)
        return result

    def _answer(self, host: str, argv: tuple[str, ...]) -> CommandResult | PeHaError | Responder:
        found = self._scripted(host, argv)
        if found is not None:
            return found
        if argv == ("cat", "/opt/puppetlabs/server/pe_version"):
            return CommandResult(host, argv, 0, self.pe_version + "\n", "", 0.0)
        if argv[:3] == ("puppet", "infrastructure", "status") and "json" in argv:
            return CommandResult(host, argv, 0, "[]\n", "", 0.0)  # JSON, as PE always prints it; no service listed
        if argv[:1] == (commands.PE_CURL,) and "query=" in argv[-1] and "[count()]" in argv[-1]:
            return CommandResult(host, argv, 0, '[{"count": 0}]', "", 0.0)  # an empty PuppetDB that answers PQL
        if argv[:1] == (commands.PE_CURL,) and argv[-1].endswith("/puppetdb-status"):
            return CommandResult(host, argv, 0, '{"state": "running"}', "", 0.0)
        return CommandResult(host, argv, 0, "", "", 0.0)

    def _scripted(self, host: str, argv: tuple[str, ...]) -> CommandResult | PeHaError | Responder | None:
        for rule in self._rules:
            if rule.host not in (None, host) or argv[: len(rule.prefix)] != rule.prefix or not rule.answers:
                continue
            if len(rule.answers) > 1 or not rule.repeat_last:
                return rule.answers.pop(0)
            return rule.answers[0]
        return None

    def put(self, host: str, local_path: Path, remote_path: str, *, mode: int = 0o600) -> None:
        self.calls.append(Call(host, ("put", str(local_path), remote_path), "put"))
        if host in self.unreachable:
            raise ConnectError("SSH connect timed out (fake)", host=host)
        self.files[(host, remote_path)] = Path(local_path).read_bytes()

    def put_bytes(self, host: str, data: bytes, remote_path: str, *, mode: int = 0o600) -> None:
        self.calls.append(Call(host, ("put", "<bytes>", remote_path), "put"))
        if host in self.unreachable:
            raise ConnectError("SSH connect timed out (fake)", host=host)
        self.files[(host, remote_path)] = data

    def get(self, host: str, remote_path: str, local_path: Path) -> None:
        self.calls.append(Call(host, ("get", remote_path, str(local_path)), "get"))
        Path(local_path).write_bytes(self.files.get((host, remote_path), b""))

    def relay(self, src_host: str, src_path: str, dst_host: str, dst_path: str, *, chunk: int = 1 << 20) -> int:
        self.calls.append(Call(dst_host, ("relay", f"{src_host}:{src_path}", dst_path), "put"))
        data = self.files.get((src_host, src_path), b"")
        self.files[(dst_host, dst_path)] = data
        return len(data)

    def open_session(self, host: str, argv: Iterable[str], *, timeout_s: float | None = None) -> FakeSession:
        argv = tuple(argv)
        self.calls.append(Call(host, argv, "session"))
        if host in self.unreachable:
            raise ConnectError("SSH connect timed out (fake)", host=host)
        return FakeSession(self, host)

    def close(self) -> None:
        pass

    # -- assertions helpers ---------------------------------------------------------------------------

    def commands_on(self, host: str) -> list[tuple[str, ...]]:
        return [c.argv for c in self.calls if c.host == host and c.kind == "run"]

    def transcript(self) -> list[str]:
        return [str(c) for c in self.calls]


@dataclass
class FakeSession:
    """An open session of the fake: what is sent up to a marker is recorded and answered by the executor's
    ``session_responder``."""

    executor: FakeExecutor
    host: str
    _pending: list[str] = field(default_factory=list)

    def send(self, text: str) -> None:
        self._pending.append(text)

    def read_until(self, marker: str, *, timeout_s: float) -> list[str]:
        sent = "".join(self._pending).replace(marker, "")
        self._pending.clear()
        self.executor.calls.append(Call(self.host, (sent,), "sql"))
        respond = self.executor.session_responder
        answer = respond(self.host, sent) if respond is not None else []
        if isinstance(answer, PeHaError):
            raise answer
        return answer

    def close(self) -> None:
        pass
