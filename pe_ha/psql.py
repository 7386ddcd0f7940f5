"""PE's PostgreSQL reached the way the guide does: ``runuser -u pe-postgres -- psql`` on the node, over SSH.

No database role, password or ``pg_hba`` line is needed for pe-ha: every query runs in a psql session as
PostgreSQL's owner on the node itself. A session stays open as long as its transaction must (the fast copy's
exported snapshot lives until every stream has imported it). Queries are pe-ha's own fixed SQL; names taken
from the catalog are quoted with ``quote_ident``.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Iterator

from pe_ha import commands
from pe_ha.errors import CommandFailed, DatabaseError, RemoteTimeout
from pe_ha.executor import Executor, RemoteSession

SEP = commands.PSQL_FIELD_SEPARATOR


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class SqlReader:
    """What pe-ha's catalog readers need: rows of text values (as psql prints them: ``t``/``f``, NULL as ``""``)."""

    def rows(self, query: str) -> list[tuple[str, ...]]:
        raise NotImplementedError

    def value(self, query: str) -> str:
        found = self.rows(query)
        return found[0][0] if found and found[0] else ""

    def execute(self, statement: str) -> None:
        self.rows(statement)

    def major(self) -> int:
        """PostgreSQL's major version (11 for 11.22)."""
        return int(self.value("SHOW server_version_num")) // 10000


class Psql(SqlReader):
    """One psql session on a node."""

    def __init__(self, session: RemoteSession, host: str, database: str, *, timeout_s: float) -> None:
        self.session, self.host, self.database, self.timeout_s = session, host, database, timeout_s
        self._token = secrets.token_hex(6)
        self._count = 0
        self._lock = threading.Lock()  # the fast copy reads its snapshot from a side thread too

    def rows(self, query: str) -> list[tuple[str, ...]]:
        with self._lock:
            self._count += 1
            marker = f"__pe-ha-{self._token}-{self._count}__"
            return self._exchange(f"{query.strip().rstrip(';')};\n\\echo {marker}\n", marker)

    def _exchange(self, text: str, marker: str) -> list[tuple[str, ...]]:
        try:
            self.session.send(text)
            lines = self.session.read_until(marker, timeout_s=self.timeout_s)
        except CommandFailed as exc:
            raise DatabaseError(f"{self.host}: PostgreSQL ({self.database}) refused pe-ha's query: {exc.output or exc}",
                                hint="check that PostgreSQL runs on the host and PEHA_PG_OS_USER / PEHA_PG_BIN_DIR "
                                     "match its installation") from None
        except RemoteTimeout:
            raise DatabaseError(f"{self.host}: PostgreSQL ({self.database}) gave no answer in {self.timeout_s:g} s",
                                hint="the database may be locked or the host overloaded; check it, then re-run") from None
        return [tuple(line.split(SEP)) for line in lines]


@contextlib.contextmanager
def session(executor: Executor, host: str, database: str, *, os_user: str, bin_dir: str,
            timeout_s: float = 600) -> Iterator[Psql]:
    """A ``Psql`` on ``host``'s ``database``, closed (its transaction ended) when the block leaves."""
    cmd = commands.psql_session(database, os_user=os_user, bin_dir=bin_dir)
    # The host bounds the session at the command limit; each answer must come within timeout_s.
    remote = executor.open_session(host, cmd)
    try:
        yield Psql(remote, host, database, timeout_s=timeout_s)
    finally:
        remote.close()
