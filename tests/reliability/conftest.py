"""The fault-injection and bad-input suite. Each test records expected and observed outcomes; at the end of the
session the suite writes docs/reliability.md itself."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

from tests.lab.conftest import fresh_lab, lab, lab_ctx  # noqa: F401  (shared lab fixtures)

ROWS: list[dict] = []
DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


class Outcome:
    def __init__(self, kind: str, case: str, expected: str):
        self.kind, self.case, self.expected = kind, case, expected
        self.observed = ""
        self.data_lost = "none"


@pytest.fixture()
def outcome():
    """``with outcome("fault", "case", "expected") as o: ...; o.observed = "..."`` — recorded for the report."""

    @contextlib.contextmanager
    def record(kind: str, case: str, expected: str):
        o = Outcome(kind, case, expected)
        started = time.monotonic()
        try:
            yield o
            holds = True
        except BaseException as exc:
            o.observed = o.observed or f"UNEXPECTED: {type(exc).__name__}: {str(exc)[:160]}"
            holds = False
            raise
        finally:
            ROWS.append({"kind": kind, "case": case, "expected": expected, "observed": o.observed, "holds": holds,
                         "data_lost": o.data_lost, "seconds": round(time.monotonic() - started, 1)})

    return record


def pytest_sessionfinish(session, exitstatus):
    if not ROWS or not os.environ.get("PEHA_WRITE_RELIABILITY_DOC"):  # `make test` sets it: a partial run keeps the doc
        return
    faults = [r for r in ROWS if r["kind"] == "fault"]
    inputs = [r for r in ROWS if r["kind"] == "bad input"]
    loads = [r for r in ROWS if r["kind"] == "load"]
    lines = ["# Reliability: faults survived, bad input refused", "",
             "Written by the test suite (`tests/reliability/`) from its last run; do not edit by hand.", "",
             f"- Faults survived: **{sum(r['holds'] for r in faults)} of {len(faults)}** tried",
             f"- Bad inputs refused: **{sum(r['holds'] for r in inputs)} of {len(inputs)}** tried",
             *([f"- Load and concurrency checks holding: **{sum(r['holds'] for r in loads)} of {len(loads)}**"] if loads else []),
             f"- Data lost: **{'none' if all(r['data_lost'] == 'none' for r in ROWS) else 'SEE ROWS'}**", "",
             "| kind | case | expected | observed | holds | data lost | s |", "|---|---|---|---|---|---|---|"]
    for r in ROWS:
        cells = [r["kind"], r["case"], r["expected"], r["observed"].replace("|", "/").replace("\n", " "),
                 "yes" if r["holds"] else "**NO**", r["data_lost"], str(r["seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    DOC.write_text("\n".join(lines) + "\n")
