"""The tests' own view of the lab's PostgreSQL: psycopg over the lab network as the lab's superuser.

This is never pe-ha's way in (pe-ha runs psql as PostgreSQL's owner on the node, over SSH); it lets a test
read a database independently of the code under test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from lab.config import LAB_DIR
from pe_ha.psql import SqlReader


@contextlib.contextmanager
def connect(address: str, dbname: str = "pe-puppetdb") -> Iterator[psycopg.Connection]:
    password = (LAB_DIR / "secrets" / "pg_superuser").read_text().strip()
    with psycopg.connect(host=address, dbname=dbname, user="postgres", password=password, connect_timeout=5,
                         autocommit=True) as conn:
        yield conn


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


class Rows(SqlReader):
    """A psycopg connection answering as ``pe_ha.psql.Psql`` does (text values, ``t``/``f``, NULL as ``""``),
    so that pe-ha's catalog readers can run on the test's own connection."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def rows(self, query: str) -> list[tuple[str, ...]]:
        cur = self.conn.execute(query)  # type: ignore[call-overload]
        return [tuple(_text(v) for v in row) for row in cur.fetchall()] if cur.description else []


@contextlib.contextmanager
def reader(address: str, dbname: str = "pe-puppetdb") -> Iterator[Rows]:
    with connect(address, dbname) as conn:
        yield Rows(conn)
