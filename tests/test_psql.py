"""pe_ha.psql: the psql session protocol, on the fake executor's sessions."""

from __future__ import annotations

import pytest

from pe_ha import commands
from pe_ha.errors import CommandFailed, DatabaseError
from pe_ha.fake_executor import FakeExecutor
from pe_ha.psql import SEP, quote_ident, quote_literal, session


def test_the_session_runs_psql_as_postgresqls_owner_on_the_node():
    fake = FakeExecutor()
    with session(fake, "master.example.com", "pe-puppetdb", os_user="pe-postgres", bin_dir="/opt/puppetlabs/server/bin"):
        pass
    assert fake.calls[0].kind == "session"
    assert fake.calls[0].argv == ("runuser", "-u", "pe-postgres", "--", "/opt/puppetlabs/server/bin/psql", "-X", "-q",
                                  "-A", "-t", "-F", "\x1f", "-v", "ON_ERROR_STOP=1", "-d", "pe-puppetdb")
    assert commands.psql_session("pe-puppetdb", os_user="pe-postgres", bin_dir="/x").argv[-1] == "pe-puppetdb"


@pytest.mark.parametrize("database", ["pe-puppetdb; DROP", "a b", ""])
def test_a_database_name_that_is_not_plain_is_refused_before_anything_runs(database):
    fake = FakeExecutor()
    with pytest.raises(Exception, match="database name"), session(fake, "m", database, os_user="pe-postgres", bin_dir="/b"):
        pass
    assert fake.calls == []


def test_rows_split_on_the_unit_separator_and_each_query_ends_with_its_marker():
    fake = FakeExecutor()
    sent: list[str] = []

    def answer(host: str, text: str) -> list[str]:
        sent.append(text)
        return [f"certnames{SEP}8192", f"reports{SEP}0", f"empty{SEP}"]

    fake.session_responder = answer
    with session(fake, "m", "pe-puppetdb", os_user="pe-postgres", bin_dir="/b") as conn:
        assert conn.rows("SELECT relname, size FROM t;") == [("certnames", "8192"), ("reports", "0"), ("empty", "")]
    assert sent[0].startswith("SELECT relname, size FROM t;\n\\echo ")  # one semicolon, then the marker echo


def test_a_refused_query_becomes_a_database_error_naming_the_host_and_database():
    fake = FakeExecutor()
    fake.session_responder = lambda host, text: CommandFailed(host=host, command="psql", exit_code=3,
                                                               output='ERROR:  relation "nope" does not exist')
    with session(fake, "m", "pe-puppetdb", os_user="pe-postgres", bin_dir="/b") as conn, \
            pytest.raises(DatabaseError, match=r'm: PostgreSQL \(pe-puppetdb\) refused .*relation "nope"'):
        conn.rows("SELECT * FROM nope")


def test_quoting():
    assert quote_ident('catalog_resources') == '"catalog_resources"'
    assert quote_ident('we"ird') == '"we""ird"'
    assert quote_literal("pe-puppetdb") == "'pe-puppetdb'"
    assert quote_literal("o'brien") == "'o''brien'"
