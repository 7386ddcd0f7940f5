"""What the copy's check accepts and refuses (``tasks.puppetdb.differences``), without a database."""

from __future__ import annotations

import pytest

from tasks.puppetdb import differences, sequences_of

SOURCE = {"rows:certnames": 20, "rows:reports": 0, "rows:reports_20261122z": 40, "sequence:certname_id_seq": "21017 called",
          "sequence:fact_values_id_seq": "5001 not called", "partitions": "abc", "partition count": 38,
          "owners": "pe-puppetdb:r=57", "database owner": "pe-postgres",
          "database acl": "pe-puppetdb=CONNECT/pe-puppetdb-migrator", "extensions": "citext 1.5,pg_trgm 1.4"}


def test_an_exact_copy_passes():
    assert differences(SOURCE, dict(SOURCE)) == {}


@pytest.mark.parametrize(("key", "value"), [
    ("sequence:certname_id_seq", "1 not called"),  # what --exclude-table-data leaves: PuppetDB's inserts collide
    ("sequence:certname_id_seq", "21016 called"),
    ("sequence:certname_id_seq", "21017 not called"),
    ("rows:reports_20261122z", 0),  # an INHERITS child whose rows never arrived
    ("rows:reports", 40),  # the parent's own rows: children counted twice
    ("partitions", "def"), ("owners", "postgres:r=57"), ("database owner", "pe-puppetdb"),
    ("database acl", "default"), ("extensions", "citext 1.5"),
])
def test_a_copy_that_differs_is_refused(key, value):
    copy = dict(SOURCE, **{key: value})
    assert key in differences(SOURCE, copy)


def test_a_missing_sequence_is_refused():
    copy = {k: v for k, v in SOURCE.items() if k != "sequence:certname_id_seq"}
    assert "sequence:certname_id_seq" in differences(SOURCE, copy)


@pytest.mark.parametrize("value", ["21018 called", "90000 called", "21017 called"])
def test_a_sequence_ahead_of_the_snapshot_passes(value):
    # pg_dump reads sequences when it reaches them, after the fingerprint: a live PuppetDB may have moved on
    assert differences(SOURCE, dict(SOURCE, **{"sequence:certname_id_seq": value})) == {}


def test_sequences_of_reads_the_fingerprint():
    assert sequences_of(SOURCE) == {"certname_id_seq": (21017, True), "fact_values_id_seq": (5001, False)}
