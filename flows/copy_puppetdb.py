"""Copy PuppetDB to the replica — PE guide, "Manually copy PuppetDB to speed replication".

Two methods reach the same end state (same tables, row counts and digests, checked in the flow). Both first
read their facts (size, free space, CPUs, which services run; the fast copy also the tables, indexes,
sequences, the schema's table of contents and the link) and plan every command from them; the free space is
checked there, before anything is written.

``fast`` (default): the schema frame from a snapshot, then one ``COPY … TO STDOUT | [zstd] | ssh | COPY … FROM STDIN``
pipeline per table (compression only when the measured link is slow) followed, in the same remote command, by
that table's own indexes and keys (``pg_restore --use-list``), then the rest of post-data (foreign keys,
partitioned parents) with ``pg_restore --jobs``, all into a *staging* database on the replica while its PuppetDB keeps running. The
staging copy is verified against the source snapshot, and only then swapped in by rename: ``puppet`` and
``pe-puppetdb`` are stopped for the swap alone.

``documented``: the guide's own steps:

1. Size check (the ``\\l+`` figure, in a psql session as PostgreSQL's owner) and free space on both ends: facts.
2. ``pg_dump --format=custom --compress=3`` on the master, from a snapshot whose fingerprint is recorded.
3. Transfer with scp; the sha256 on both ends must match (a mismatch is never restored).
4. Stop ``puppet`` then ``pe-puppetdb`` on the replica (approval pause unless approved up front).
5. ``pg_restore --clean --jobs=<replica CPUs>``; success is judged by verifying the result, never by exit code alone.
6. Start both services again — also when a later step failed — then ``puppet agent -t`` on the replica.
7. Remove the dump files.
"""


import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from prefect import flow

from flows import _history as history
from flows._common import log, run_name
from flows._entry import with_run_context
from flows._lock import installation_lock
from flows._steps import Outcome, Procedure, Step, change_window, read_facts
from pe_ha import commands, versions
from pe_ha.context import RunContext
from pe_ha.errors import (
    DatabaseError,
    PostconditionFailed,
    PreconditionFailed,
    RemoteError,
    TransferError,
    ValidationError,
    is_retryable,
)
from pe_ha.forecast import copy_forecast
from pe_ha.settings import Settings, distinct
from tasks import agent, infrastructure, puppetdb, puppetdb_fast, puppetdb_query, services
from tasks.copy_plan import PLANNED_SNAPSHOT, FastCopyFacts, plan_fast_copy

SERVICES_IN_ORDER = ("puppet", "pe-puppetdb")  # stopped in this order, started in reverse


@flow(name="copy-puppetdb", flow_run_name=run_name("copy-puppetdb", "target", "replica"))
@with_run_context
@installation_lock("copy-puppetdb")
def copy_puppetdb(ctx: RunContext, source: str | None = None, target: str | None = None,
                  method: Literal["fast", "documented"] = "fast", approve: bool = False, dry_run: bool = False,
                  window_minutes: float | None = None):
    """Copy pe-puppetdb from ``source`` (the master) to ``target`` (the replica) and verify the result.

    Args:
        source: Host whose pe-puppetdb is copied; empty means the master.
        target: Host that receives the copy; empty means the replica. Its puppet and pe-puppetdb are stopped only
            while the copy is swapped in (fast) or restored (documented).
        method: fast: per-table streams into a staging database, verified, then swapped in; documented: the guide's
            pg_dump, scp and pg_restore --clean.
        approve: Give the approval up front; otherwise the run pauses before the destructive step and waits for an
            operator.
        dry_run: Validate and show the plan (every command and where it runs) without running anything.
        window_minutes: The change window booked for this run, in minutes from its scheduled start (pe-ha run
            --at/--window, or the UI's custom run). At the start the facts are read again; a forecast whose high
            end does not fit what is left of the window starts nothing. A run that will outlive it goes on and
            alerts once.
    """
    window = change_window(window_minutes)
    s = ctx.settings
    source = s.pick_host(source, default=s.master.name, what="source")
    target = s.pick_host(target, default=s.replica.name if s.replica else None, what="target")
    distinct(source, target, "target")
    kind = COPY_METHODS.get(method)
    if kind is None:
        raise ValidationError(f"method {method!r} must be one of {', '.join(COPY_METHODS)}")
    run_id = uuid.uuid4().hex[:12]
    folder = f"{s.dump_dir.rstrip('/')}/pe-ha"
    dump_file = f"{folder}/pe-puppetdb-{run_id}.dump"
    places = [(host, path) for host, path, _ in kind.space_needed(s, source, target, size=0)]
    facts = read_facts(ctx, "copy-puppetdb", lambda: read_copy_facts(ctx, source, target, places, kind.read_method_facts),
                       approve=approve)
    check_space(facts, kind.space_needed(s, source, target, size=facts.size))
    copy = kind(ctx, source, target, folder, dump_file, facts)
    steps = copy.steps()
    forecast = copy_forecast(method, [step.key for step in steps], size_bytes=facts.size, cpus=facts.cpus,
                             link_mb_s=facts.link_mb_s)
    procedure = Procedure(ctx, "copy-puppetdb", f"{source} -> {target} ({method})", steps, facts=copy.fact_lines(),
                          forecast=forecast,
                          past=history.ratios(ctx, "copy-puppetdb"), window=window)
    if dry_run:
        return procedure.plan()
    finished = procedure.run(copy.outcome, approve=approve)
    if not finished.completed:
        return finished.cancelled()  # nothing swapped in or restored
    return copy.result(finished.results)


@dataclass(frozen=True)
class CopyFacts:
    """What the copy is planned from, read before anything changes."""

    pe_version: versions.PeVersion  # of the source, refused when pe-ha does not support it
    size: int  # of pe-puppetdb on the source
    cpus: int  # of the target
    free: tuple[tuple[str, str, int], ...]  # (host, path, bytes free)
    running: tuple[str, ...]  # of SERVICES_IN_ORDER, those running on the target
    fast: FastCopyFacts | None
    counts: dict[str, int] | None = None  # what the source's PuppetDB answers; None: nothing on its loopback
    link_mb_s: float | None = None  # ssh from source to target, MB/s; None: the probe could not run


def read_copy_facts(ctx: RunContext, source: str, target: str, places: list[tuple[str, str]],
                    read_method_facts: Callable[[RunContext, str, str], FastCopyFacts | None]) -> CopyFacts:
    # Independent reads: they run at once.
    version = infrastructure.pe_version.submit(ctx, source)
    size = puppetdb.database_size.submit(ctx, source)
    cpus = puppetdb.cpu_count.submit(ctx, target)
    free = [puppetdb.free_bytes.submit(ctx, host, path) for host, path in places]
    states = [services.service_state.submit(ctx, target, name) for name in SERVICES_IN_ORDER]
    counts = puppetdb_query.pql_counts.submit(ctx, source)
    link = puppetdb_fast.read_link_rate.submit(ctx, source, target)
    fast = read_method_facts(ctx, source, target)
    if fast is not None:
        link_mb_s: float | None = link.result()  # the fast copy's compression needs it: a failed probe stops it
    else:
        try:
            link_mb_s = link.result()
        except (PreconditionFailed, RemoteError) as exc:
            # Only the forecast reads it: the documented copy does not depend on it, and its transfer step will
            # say more precisely what the link does. The forecast widens its range instead ("link not measured").
            log().warning("link %s -> %s not measured (%s); the forecast assumes a range of links", source, target, exc)
            link_mb_s = None
    return CopyFacts(pe_version=version.result(), size=size.result(), cpus=cpus.result(),
                     free=tuple((h, p, f.result()) for (h, p), f in zip(places, free, strict=True)),
                     running=tuple(n for n, state in zip(SERVICES_IN_ORDER, states, strict=True)
                                   if state.result() == "running"),
                     fast=fast, counts=counts.result(), link_mb_s=link_mb_s)


def check_space(facts: CopyFacts, needs: list[tuple[str, str, int]]) -> None:
    """The guide's size check: enough free space at each place the copy writes, before anything is written."""
    free_at = {(host, path): free for host, path, free in facts.free}
    for host, path, need in needs:
        free = free_at[(host, path)]
        if free < need:
            raise PreconditionFailed(
                f"{host}:{path} has {free / 2**20:.0f} MiB free; copying a {facts.size / 2**20:.0f} MiB pe-puppetdb "
                f"needs about {need / 2**20:.0f} MiB there", hint="free space there (or set PEHA_DUMP_DIR)")


# How long PuppetDB may take to start on the copy (it checks the schema and may migrate; PE's own service start
# allows minutes).
PUPPETDB_START_PATIENCE_S = 600


# How long a failing run keeps trying to start again the services it stopped (a link that drops mid-copy
# usually comes back; leaving PuppetDB down on the replica is worse than a slow failure).
RESTART_PATIENCE_S = 180


@dataclass(frozen=True)
class ServicesStopped:
    """What the stop step did: the services it stopped, and when it began."""

    names: tuple[str, ...]
    at: float


class Copy:
    """What both methods share: the steps around the copy itself, planned from the facts. A method is a
    subclass: where it writes, what it reads first, its steps and its result. It holds the plan only; what a
    run finds is in its steps' results."""

    method: ClassVar[str]
    done: ClassVar[str]  # the summary's outcome

    @staticmethod
    def space_needed(s: Settings, source: str, target: str, *, size: int) -> list[tuple[str, str, int]]:
        """Where the copy writes, and the free space it needs there (bytes) for a pe-puppetdb of ``size``."""
        raise NotImplementedError

    @staticmethod
    def read_method_facts(ctx: RunContext, source: str, target: str) -> FastCopyFacts | None:
        return None

    def steps(self) -> list[Step]:
        raise NotImplementedError

    def method_result(self, results: dict[str, Any]) -> dict:
        raise NotImplementedError

    def __init__(self, ctx: RunContext, source: str, target: str, folder: str, dump_file: str, facts: CopyFacts) -> None:
        self.ctx, self.s, self.source, self.target = ctx, ctx.settings, source, target
        self.folder, self.dump_file, self.facts = folder, dump_file, facts
        self.pg: dict[str, str] = {"os_user": self.s.pg_os_user, "bin_dir": self.s.pg_bin_dir}
        self.staging = "pe-puppetdb" + commands.STAGING_SUFFIX

    def fact_lines(self) -> list[str]:
        f = self.facts
        lines = [f"PE {f.pe_version} on {self.source}", f"pe-puppetdb on {self.source}: {f.size / 2**20:.1f} MiB",
                 f"{self.target}: {f.cpus} CPUs",
                 *[f"{h}:{p}: {free / 2**20:.0f} MiB free" for h, p, free in f.free],
                 f"running on {self.target}: {', '.join(f.running) or 'neither puppet nor pe-puppetdb'}",
                 f"PuppetDB on {self.source}: "
                 + (", ".join(f"{n} {c}" for n, c in f.counts.items()) if f.counts is not None
                    else f"nothing answers on {commands.PUPPETDB_LOOPBACK}")]
        if f.link_mb_s is not None:
            rate = "faster than the probe can tell" if f.link_mb_s == float("inf") else f"{f.link_mb_s:.0f} MB/s"
            lines.append(f"link {self.source} -> {self.target}: {rate} (ssh, measured)")
        return lines

    def prepare(self) -> Step:
        def prepare() -> None:
            for future in [puppetdb.prepare_dump_dir.submit(self.ctx, h, self.folder) for h in (self.source, self.target)]:
                future.result()

        return Step("prepare", "prepare dump folders", f"{self.source}, {self.target}", prepare, concurrent=True,
                    commands=[(h, commands.make_dir(self.folder, owner=self.s.pg_os_user)) for h in (self.source, self.target)])

    def approval(self, what: str) -> Step:
        return Step("approval", "operator approval", "operator", lambda: None, approval=what)

    def stop_services(self) -> Step:
        planned = self.facts.running

        def stop() -> ServicesStopped:
            at = time.monotonic()
            for name in planned:
                services.set_service(self.ctx, self.target, name, "stopped")
            started_since = [n for n in SERVICES_IN_ORDER if services.service_state(self.ctx, self.target, n) == "running"]
            if started_since:
                raise PreconditionFailed(f"{self.target}: {', '.join(started_since)} runs, though it was stopped when "
                                         "this run read the facts; nothing was replaced",
                                         hint="stop it, or run the copy again (it plans from what runs then)")
            return ServicesStopped(planned, at)

        return Step("stop", "stop puppet, then pe-puppetdb", self.target, stop, destructive=True,
                    commands=[(self.target, commands.service(n, "stopped")) for n in planned]
                    + [(self.target, commands.service_state(n)) for n in SERVICES_IN_ORDER],
                    note="" if planned else "neither was running when the facts were read; both are checked")

    def start_services(self) -> Step:
        def start(stopped: ServicesStopped | None) -> float:
            """Starts again what the stop step stopped; returns how long the target was stopped (seconds)."""
            # After a failed stop some may be running still: starting a running service changes nothing.
            left_down = self._restart(stopped.names if stopped else self.facts.running)
            if left_down:
                raise PostconditionFailed(f"{self.target}: {', '.join(left_down)} did not start again after the copy",
                                         hint=f"start them on {self.target}: puppet resource service <name> ensure=running")
            return time.monotonic() - stopped.at if stopped else 0.0

        return Step("start", "start pe-puppetdb, then puppet, again", self.target, start, always=True, armed_by="stop",
                    needs=("stop",),
                    commands=[(self.target, commands.service(n, "running")) for n in reversed(self.facts.running)],
                    note="the services the copy stopped, also after a failure"
                    + ("" if self.facts.running else ": none"))

    def not_judged(self) -> str:
        """Why PuppetDB cannot judge this copy (empty when it can)."""
        if "pe-puppetdb" not in self.facts.running:
            return f"pe-puppetdb was not running on {self.target} before the copy, and the copy leaves it stopped"
        if self.facts.counts is None:
            return (f"PuppetDB on {self.source} did not answer on its loopback listener ({commands.PUPPETDB_LOOPBACK}) "
                    "when the facts were read")
        return ""

    def accept(self) -> Step:
        why_not = self.not_judged()

        def accept() -> dict:
            if why_not:  # the copy stands on pe-ha's own check of the rows; say that PuppetDB did not judge it
                log().warning("the copy is not judged by PuppetDB: %s", why_not)
                return {"judged": False, "why": why_not}
            assert self.facts.counts is not None
            took = puppetdb_query.wait_for_puppetdb(self.ctx, self.target, PUPPETDB_START_PATIENCE_S)
            found = puppetdb_query.pql_counts(self.ctx, self.target)
            after = puppetdb_query.pql_counts(self.ctx, self.source)  # after the target's: it bounds what it pulled
            if found is None or after is None:
                raise PostconditionFailed(f"PuppetDB on {self.source if after is None else self.target} stopped "
                                          "answering on its loopback listener during the acceptance",
                                          hint="check both PuppetDBs; the copy itself was verified row by row")
            problems = puppetdb_query.acceptance_problems(self.facts.counts, found, after)
            if problems:
                raise PostconditionFailed(f"PuppetDB on {self.target} serves the copy but does not answer as "
                                          f"{self.source}'s did: {'; '.join(problems)}",
                                          hint=f"compare the two with PQL; pe-puppetdb{commands.OLD_SUFFIX} (fast "
                                               f"copy) is kept on {self.target} until an accepted copy drops it")
            return {"judged": True, "running_after_s": round(took, 1), "counts": found}

        queries = [commands.puppetdb_query(pql) for pql in puppetdb_query.ACCEPTANCE_COUNTS.values()]
        return Step("accept", "PuppetDB on the target serves the copy and answers as the source's", self.target,
                    accept, poll=not why_not, commands=[] if why_not else
                    [(self.target, commands.puppetdb_status())] + [(self.target, q) for q in queries]
                    + [(self.source, q) for q in queries],
                    note=f"not judged: {why_not}" if why_not else
                    f"its status polled until running (at most {PUPPETDB_START_PATIENCE_S} s); each count on the "
                    "target must lie between the source's before the copy and after it")

    def _restart(self, stopped: Sequence[str], patience_s: float = RESTART_PATIENCE_S) -> list[str]:
        """Start ``stopped`` again, in reverse order; returns those that would not start. Each start retries
        connection errors; unreachable hosts are tried again until ``patience_s`` has passed."""
        pending = list(reversed(stopped))
        deadline = time.monotonic() + patience_s
        while pending:
            name = pending[0]
            try:
                services.set_service(self.ctx, self.target, name, "running")
                pending.pop(0)
            except Exception as exc:  # keep trying while there is time: every service we stopped must come back
                if time.monotonic() > deadline or not is_retryable(exc):
                    log().error("could not start %s on %s again: %s", name, self.target, exc)
                    break
                log().warning("%s on %s is not started yet (%s); trying again", name, self.target, exc)
                time.sleep(5)
        return pending

    def remove_dump(self) -> Step:
        def remove() -> None:
            for host in (self.source, self.target):
                try:
                    puppetdb.remove_files(self.ctx, host, self.dump_file)
                except Exception as exc:  # cleanup must not hide the real outcome; tell the operator instead
                    log().error("could not remove %s on %s: %s", self.dump_file, host, exc)

        return Step("remove-dump", "remove the dump files", f"{self.source}, {self.target}", remove, always=True,
                    armed_by="prepare", commands=[(h, commands.remove_files(self.dump_file)) for h in (self.source, self.target)])

    def agent_run(self, *, drop_old: bool = False) -> Step:
        agent_cmd = commands.agent_run()
        old = "pe-puppetdb" + commands.OLD_SUFFIX

        def run() -> int:
            # Dropping the old copy (removing its files) and the agent run touch different things: run them at once.
            dropping = puppetdb.drop_database.submit(self.ctx, self.target, old) if drop_old else None
            exit_code = agent.agent_run(self.ctx, self.target, agent_cmd)
            if dropping is not None:
                dropping.result()
            return exit_code

        pairs = [(self.target, agent_cmd)] + ([(self.target, commands.drop_database(old, **self.pg))] if drop_old else [])
        return Step("agent-run", "puppet agent -t" + (f" (and drop {old})" if drop_old else ""), self.target, run,
                    commands=pairs, concurrent=drop_old)

    # -- the record ----------------------------------------------------------------------------------------

    def outcome(self, results: dict[str, Any]) -> Outcome:
        notes = [f"database size {self.facts.size / 2**20:.1f} MiB", f"pe-puppetdb stopped for {results['start']:.1f} s"]
        accepted = results["accept"]
        notes.append(f"accepted by PuppetDB on {self.target} (running after {accepted['running_after_s']} s; "
                     + ", ".join(f"{n} {c}" for n, c in accepted["counts"].items()) + ")" if accepted["judged"]
                     else f"not judged by PuppetDB: {accepted['why']}")
        version = self.facts.pe_version
        if not version.documents_manual_copy:
            notes.append(f"PE {version} documents no manual PuppetDB copy (the guide's section ends with 2019.5): this "
                         "copy reseeded the replica's pe-puppetdb, which PE's own sync would otherwise rebuild")
        return Outcome(self.done, notes=notes)

    def result(self, results: dict[str, Any]) -> dict:
        return {"method": self.method, "source": self.source, "target": self.target, "bytes": self.facts.size,
                "target_stopped_seconds": round(results["start"], 2), "agent_exit_code": results["agent-run"],
                "puppetdb_acceptance": results["accept"],
                **self.method_result(results)}


class FastCopy(Copy):
    """Per-table streams into a staging database beside the live one, verified, then swapped in."""

    method = "fast"
    done = "copied, verified and swapped in"

    @staticmethod
    def space_needed(s: Settings, source: str, target: str, *, size: int) -> list[tuple[str, str, int]]:
        # The schema frame in the dump folders; the staging copy beside the live database.
        return [(source, s.dump_dir, 64 * 2**20), (target, s.dump_dir, 64 * 2**20),
                (target, s.pg_data_dir, int(size * 1.2) + 256 * 2**20)]

    @staticmethod
    def read_method_facts(ctx: RunContext, source: str, target: str) -> FastCopyFacts | None:
        return puppetdb_fast.read_fast_copy_facts(ctx, source, target)

    def __init__(self, ctx: RunContext, source: str, target: str, folder: str, dump_file: str, facts: CopyFacts) -> None:
        super().__init__(ctx, source, target, folder, dump_file, facts)
        assert facts.fast is not None and facts.link_mb_s is not None  # read_copy_facts stops without them
        self.fast_plan = plan_fast_copy(facts.fast, source=source, target=target, schema_file=dump_file,
                                        staging=self.staging, index_build_memory_mb=self.s.index_build_memory_mb,
                                        cpus=facts.cpus, link_mb_s=facts.link_mb_s, **self.pg)

    def fact_lines(self) -> list[str]:
        fast = self.facts.fast
        assert fast is not None
        return [*super().fact_lines(),
                f"{len(fast.tables)} tables, {len(fast.indexes)} indexes, {len(fast.sequences)} sequences; "
                f"COPY {'binary' if fast.binary else 'text'} (PostgreSQL majors {'match' if fast.binary else 'differ'}); "
                f"compression {self.fast_plan.compress} (measured link; "
                f"{', '.join(fast.compressors) or 'no compressor'} on both ends)"]

    def steps(self) -> list[Step]:
        t, pg = self.target, self.pg
        jobs = [p.job for p in self.fast_plan.jobs]
        return [
            self.prepare(),
            Step("copy", f"stream every table into {self.staging}, building each table's indexes once its rows are in",
                 f"{self.source} -> {t}", self._fast_copy, commands=self.fast_plan.rows(), concurrent=True, timed=True,
                 shown={PLANNED_SNAPSHOT: "<snapshot exported by the run>"},
                 note=f"from a snapshot exported in a psql session on {self.source}: "
                      f"{sum(j.kind == 'stream' for j in jobs)} streams and {sum(j.kind == 'build' for j in jobs)} "
                      f"index builds, at most {self.fast_plan.workers} at once, each build once its table is in; "
                      "refused if the schema changed since the facts were read"),
            Step("verify-staging", "verify the staging copy against the source snapshot", t, self._verify_staging,
                 needs=("copy",),
                 note="psql session on the staging database: rows as COPY reported them, sequences, partitions, "
                      "owners, ACL and extensions against the source snapshot"),
            self.approval(f"Stop puppet and pe-puppetdb on {t} briefly and swap in the verified copy of pe-puppetdb "
                          f"from {self.source} (the current one is kept as pe-puppetdb{commands.OLD_SUFFIX} until the "
                          "swap succeeds)."),
            self.stop_services(),
            Step("swap", "swap the staging database in", t, self._swap, destructive=True,
                 commands=[(t, commands.swap_databases("pe-puppetdb", self.staging, "pe-puppetdb" + commands.OLD_SUFFIX,
                                                       **pg))]),
            self.start_services(),
            self.accept(),
            Step("drop-staging", f"drop {self.staging} when it was not swapped in", t, self._drop_unused_staging,
                 always=True, armed_by="copy", needs=("swap",),
                 note=f"only after a failure or a rejected approval: {commands.drop_database(self.staging, **pg).shell()}"
                      " (the live pe-puppetdb is untouched)"),
            self.remove_dump(),
            self.agent_run(drop_old=True),
        ]

    def _fast_copy(self, expected_s: float) -> puppetdb_fast.StagingCopy:
        return puppetdb_fast.fast_copy_to_staging(self.ctx, self.fast_plan, source_bytes=self.facts.size,
                                                  expected_s=expected_s)

    def _verify_staging(self, copied: puppetdb_fast.StagingCopy) -> None:
        puppetdb_fast.verify_staging(self.ctx, self.target, copied.fingerprint, copied.loaded_rows)

    def _swap(self) -> bool:
        puppetdb.swap_in_staging(self.ctx, self.target)
        return True

    def _drop_unused_staging(self, swapped: bool | None) -> None:
        if swapped:
            return
        try:
            puppetdb.drop_database(self.ctx, self.target, self.staging)
        except Exception as exc:  # leave it for the operator, but say so
            log().error("could not drop %s on %s: %s", self.staging, self.target, exc)

    def method_result(self, results: dict[str, Any]) -> dict:
        copied: puppetdb_fast.StagingCopy = results["copy"]
        return {"compress": self.fast_plan.compress, "tables": copied.tables,
                "timings": {k: round(v, 2) for k, v in copied.timings.items()}}


class DocumentedCopy(Copy):
    """The guide's own steps: pg_dump, scp with checksums, then pg_restore --clean over the replica's database."""

    method = "documented"
    done = "copied and verified"

    @staticmethod
    def space_needed(s: Settings, source: str, target: str, *, size: int) -> list[tuple[str, str, int]]:
        need = int(size * 0.5) + 64 * 2**20  # a Z3 custom dump is ~20 % of the database; keep a wide margin
        return [(source, s.dump_dir, need), (target, s.dump_dir, need)]

    def steps(self) -> list[Step]:
        f, t = self.dump_file, self.target
        self.dump_cmd = commands.pg_dump(file=f, snapshot=PLANNED_SNAPSHOT, os_user=self.s.pg_os_user,
                                         bin_dir=self.s.pg_bin_dir)
        self.restore_cmd = commands.pg_restore(file=f, jobs=self.facts.cpus, os_user=self.s.pg_os_user,
                                               bin_dir=self.s.pg_bin_dir)
        return [
            self.prepare(),
            Step("dump", "pg_dump (snapshot)", self.source, self._dump, commands=[(self.source, self.dump_cmd)],
                 shown={PLANNED_SNAPSHOT: "<snapshot exported by the run>"},
                 note="from a snapshot exported in a psql session on the source, whose fingerprint is read first"),
            Step("transfer", "transfer and verify checksum", f"{self.source} -> {t}", self._transfer,
                 commands=[(self.source, commands.scp_to(f, host=t, dest=f)), (self.source, commands.sha256sum(f)),
                           (t, commands.sha256sum(f))]),
            self.approval(f"Stop puppet and pe-puppetdb on {t} and replace its pe-puppetdb with the copy from "
                          f"{self.source} (pg_restore --clean --jobs={self.facts.cpus}, {t}'s CPUs)."),
            self.stop_services(),
            Step("restore", "pg_restore --clean", t, self._restore, destructive=True, commands=[(t, self.restore_cmd)],
                 timed=True),
            Step("verify", "verify the copy against the source snapshot", t, self._verify, needs=("dump",),
                 note="psql session on the target: rows, digests, sequences, partitions, owners, ACL and extensions"),
            self.start_services(),
            self.accept(),
            self.remove_dump(),
            self.agent_run(),
        ]

    def _dump(self) -> puppetdb.DumpResult:
        return puppetdb.dump(self.ctx, self.source, self.dump_file, self.dump_cmd, PLANNED_SNAPSHOT)

    def _transfer(self) -> None:
        puppetdb.transfer(self.ctx, self.source, self.target, self.dump_file, self.dump_file)
        sent, received = puppetdb.checksum(self.ctx, self.source, self.dump_file), puppetdb.checksum(self.ctx, self.target, self.dump_file)
        if sent != received:
            raise TransferError(f"checksum mismatch: sent {sent[:16]}…, received {received[:16]}…; not restored",
                                host=self.target, hint="re-run the copy; check the link between the hosts")

    def _partial(self, exc: Exception) -> DatabaseError:
        # From the restore on, the target's pe-puppetdb may hold part of the copy: say so in the run's final state.
        return DatabaseError(f"{self.target}: pe-puppetdb is NOT a verified copy of {self.source}'s (the restore did "
                             f"not finish and verify: {exc})",
                             hint="re-run copy_puppetdb; until then the replica's PuppetDB catches up by replication "
                                  "from the master")

    def _restore(self, expected_s: float) -> puppetdb.RestoreResult:
        try:
            return puppetdb.restore(self.ctx, self.target, self.restore_cmd, source_bytes=self.facts.size,
                                    expected_s=expected_s)
        except Exception as exc:  # re-raised, saying the target's database is now partial
            raise self._partial(exc) from exc

    def _verify(self, dumped: puppetdb.DumpResult) -> None:
        try:
            puppetdb.verify(self.ctx, self.target, dumped.fingerprint)
        except Exception as exc:  # re-raised, saying the target's database is now partial
            raise self._partial(exc) from exc

    def method_result(self, results: dict[str, Any]) -> dict:
        dumped: puppetdb.DumpResult = results["dump"]
        restored: puppetdb.RestoreResult = results["restore"]
        return {"restore_exit_code": restored.exit_code, "ignored_restore_errors": len(restored.ignored_errors),
                "timings": {"dump": round(dumped.seconds, 2), "restore": round(restored.seconds, 2)},
                "tables": sum(1 for k in dumped.fingerprint if k.startswith("rows:"))}


COPY_METHODS: dict[str, type[Copy]] = {kind.method: kind for kind in (FastCopy, DocumentedCopy)}
