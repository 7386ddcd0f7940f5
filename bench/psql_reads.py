"""pe-ha's PostgreSQL reads through a psql session over SSH, against psycopg over the network (the baseline),
in the same run on the lab that is up: the source fingerprint, a progress look, one query's round trip.

    python -m lab up --pdb-nodes 1000 && python -m bench.psql_reads --tries 5
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import lab_context
from lab import inspect
from tasks import puppetdb

M = "master.lab.test"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tries", type=int, default=5)
    args = p.parse_args()
    with lab_context() as ctx:
        over_ssh, baseline = [], []
        for _ in range(args.tries):
            t = time.monotonic()
            with puppetdb.connect(ctx, M) as conn:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                mine = puppetdb.fingerprint_in(conn)
            over_ssh.append(time.monotonic() - t)
            t = time.monotonic()
            with inspect.reader(ctx.settings.host(M).address) as conn:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                theirs = puppetdb.fingerprint_in(conn)
            baseline.append(time.monotonic() - t)
            assert mine == theirs, "the two readers disagree"
        a, b = statistics.median(over_ssh), statistics.median(baseline)
        print(f"fingerprint ({len(mine)} keys): psql over ssh {a:.3f} s, psycopg {b:.3f} s, ratio {a / b:.2f} "
              f"(medians of {args.tries})")
        t = time.monotonic()
        for _ in range(args.tries):
            puppetdb.load_progress_on(ctx, M, "pe-puppetdb")
        print(f"progress look (a short session each): {(time.monotonic() - t) / args.tries:.3f} s")
        with puppetdb.connect(ctx, M) as conn:
            t = time.monotonic()
            for _ in range(100):
                conn.value("SELECT 1")
            print(f"one query's round trip in an open session: {(time.monotonic() - t) * 10:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
