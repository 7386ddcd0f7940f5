"""The one exception tree of pe-ha.

Every lower-level error (paramiko/fabric, httpx, psql over SSH, OSError) is translated into one of these
at the boundary that met it, so flows and tasks only ever handle ``PeHaError`` subclasses::

    PeHaError
    ├── ConfigurationError          a setting is missing or invalid (names the setting)
    ├── ValidationError             an operator input is refused before anything runs
    ├── PreconditionFailed          the installation is not in a state where the step is safe
    ├── PostconditionFailed         a step ran, but what it must leave behind does not hold
    ├── RemoteError                 something went wrong on, or on the way to, a PE node
    │   ├── ConnectError            the host could not be reached (retryable)
    │   ├── RemoteTimeout           the command outlived its time limit and was killed (retryable)
    │   ├── CommandFailed           the command ran and exited non-zero (not retried by default)
    │   └── TransferError           a file transfer failed or arrived different (retryable)
    ├── ApiError                    a PE HTTPS API call failed
    │   ├── ApiUnavailable          connect error, timeout or 5xx (retryable)
    │   └── AuthError               401/403, e.g. an expired RBAC token (never retried)
    ├── DatabaseError               a PostgreSQL query failed (psql on the node)
    ├── WaitTimedOut                a bounded wait ended before the condition held
    └── ApprovalRejected            the operator did not approve a destructive step

``is_retryable(exc)`` is the single answer to "may a task retry this?".
"""

from __future__ import annotations

from pe_ha.masking import mask


class PeHaError(Exception):
    """Base of every error pe-ha raises on purpose. ``hint`` tells the operator what to do next.

    Registered secrets are masked here, once: the message becomes a run's state message in Prefect's
    database, where no log filter reaches."""

    retryable: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        message, hint = mask(message), mask(hint) if hint else hint
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} — {hint}")


class ConfigurationError(PeHaError):
    """A setting is missing or invalid."""

    def __init__(self, setting: str, problem: str, *, hint: str | None = None) -> None:
        self.setting = setting
        super().__init__(f"setting {setting}: {problem}", hint=hint)


class ValidationError(PeHaError):
    """An operator input was refused before any remote command ran."""


class PreconditionFailed(PeHaError):
    """The installation is not in a state where the step is safe."""


class PostconditionFailed(PeHaError):
    """A step ran, but what it must leave behind does not hold (a copy that differs, a service left down)."""


class RemoteError(PeHaError):
    """Something went wrong on, or on the way to, a PE node."""

    def __init__(self, message: str, *, host: str, hint: str | None = None) -> None:
        self.host = host
        super().__init__(f"{host}: {message}", hint=hint)


class ConnectError(RemoteError):
    """The host could not be reached over SSH."""

    retryable = True


class RemoteTimeout(RemoteError):
    """A remote command outlived its time limit and was killed on the host."""

    retryable = True


class CommandFailed(RemoteError):
    """A remote command exited non-zero."""

    def __init__(
        self, *, host: str, command: str, exit_code: int, output: str = "", hint: str | None = None
    ) -> None:
        self.command = command
        self.exit_code = exit_code
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-8:])
        msg = f"`{command}` exited {exit_code}" + (f":\n{tail}" if tail else "")
        super().__init__(msg, host=host, hint=hint)


class TransferError(RemoteError):
    """A file transfer failed, or what arrived differs from what was sent."""

    retryable = True


class ApiError(PeHaError):
    """A PE HTTPS API call failed."""

    def __init__(self, message: str, *, url: str, status: int | None = None, hint: str | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(f"{url}: {message}", hint=hint)


class ApiUnavailable(ApiError):
    """Connect error, timeout, or a 5xx answer."""

    retryable = True


class AuthError(ApiError):
    """401 or 403: the RBAC token is missing, expired or revoked, or lacks permission. Never retried."""


class DatabaseError(PeHaError):
    """A PostgreSQL call failed."""


class WaitTimedOut(PeHaError):
    """A bounded wait ended before its condition held. ``last_seen`` is the last observation."""

    def __init__(self, message: str, *, last_seen: object = None, hint: str | None = None) -> None:
        self.last_seen = last_seen
        super().__init__(message, hint=hint)


class ApprovalRejected(PeHaError):
    """The operator rejected, or did not give, approval for a destructive step."""


class ApprovalTimedOut(PeHaError):
    """No one answered an approval pause within its timeout."""


class LockLost(PeHaError):
    """Between two steps, the run could not confirm it still holds its installation's lock."""


def is_retryable(exc: BaseException) -> bool:
    """Whether a task may retry after ``exc``. Auth, validation, preconditions and refusals never are."""
    if isinstance(exc, PeHaError):
        return exc.retryable
    return isinstance(exc, ConnectionError | TimeoutError)
