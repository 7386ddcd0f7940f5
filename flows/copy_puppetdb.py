"""Copy PuppetDB to the replica — PE guide, "Manually copy PuppetDB to speed replication".

Two methods reach the same end state (same tables, row counts and digests, checked in the flow):

``fast`` (default): the schema frame from a snapshot, then one ``COPY … TO STDOUT | [zstd] | ssh | COPY … FROM STDIN``
pipeline per table (compression only when the measured link is slow) followed, in the same remote command, by
that table's own indexes and keys (``pg_restore --use-list``), then the rest of post-data (foreign keys,
partitioned parents) with ``pg_restore --jobs``, all into a *staging* database on the replica while its PuppetDB keeps running. The
staging copy is verified against the source snapshot, and only then swapped in by rename: ``puppet`` and
``pe-puppetdb`` are stopped for the swap alone.

``documented``: the guide's own steps:

1. Size check (the ``\\l+`` figure, in a psql session as PostgreSQL's owner) and free space on both ends.
2. ``pg_dump --format=custom --compress=3`` on the master, from a snapshot whose fingerprint is recorded.
3. Transfer with scp; the sha256 on both ends must match (a mismatch is never restored).
4. Stop ``puppet`` then ``pe-puppetdb`` on the replica (approval pause unless approved up front).
5. ``pg_restore --clean --jobs=<replica CPUs>``; success is judged by verifying the result, never by exit code alone.
6. Start both services again — also when a later step failed — then ``puppet agent -t`` on the replica.
7. Remove the dump files.
"""


import time
import uuid
from typing import Literal

from prefect import flow
from prefect.states import Cancelled

from flows._common import Runbook, distinct, installation_lock, inventory_host, log, require_approval, run_name
from pe_ha import commands, runtime
from pe_ha.errors import (
    ApprovalRejected,
    DatabaseError,
    PreconditionFailed,
    TransferError,
    ValidationError,
    is_retryable,
)
from tasks import agent, puppetdb, services

SERVICES_IN_ORDER = ("puppet", "pe-puppetdb")  # stopped in this order, started in reverse


@flow(name="copy-puppetdb", flow_run_name=run_name("copy-puppetdb", "target", "replica"))
@installation_lock("copy-puppetdb")
def copy_puppetdb(source: str | None = None, target: str | None = None,
                  method: Literal["fast", "documented"] = "fast", approve: bool = False, dry_run: bool = False):
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
    """
    s = runtime.settings()
    source = inventory_host(source, default=s.master.name, what="source")
    target = inventory_host(target, default=s.replica.name if s.replica else None, what="target")
    distinct(source, target, "target")
    if method not in ("fast", "documented"):
        raise ValidationError(f"method {method!r} must be fast or documented")
    run_id = uuid.uuid4().hex[:12]
    folder = f"{s.dump_dir.rstrip('/')}/pe-ha"
    dump_file = f"{folder}/pe-puppetdb-{run_id}.dump"
    book = Runbook("copy-puppetdb", f"{source} -> {target} ({method})")
    _plan(book, s, method, source, target, dump_file)
    if dry_run:
        return {"dry_run": True, "plan": book.publish_plan()}

    # The checks are independent reads: they run at once.
    with book.step("size, free space and CPU checks", f"{source}, {target}"):
        size_future = puppetdb.database_size.submit(source)
        jobs_future = puppetdb.cpu_count.submit(target)
        places = [(source, s.dump_dir), (target, s.dump_dir)] + ([(target, s.pg_data_dir)] if method == "fast" else [])
        free_futures = [puppetdb.free_bytes.submit(host, path) for host, path in places]
        size = size_future.result()
        if method == "documented":
            need = int(size * 0.5) + 64 * 2**20  # a Z3 custom dump is ~20 % of the database; keep a wide margin
            needs = [need, need]
        else:  # the staging copy lives beside the live one
            needs = [64 * 2**20, 64 * 2**20, int(size * 1.2) + 256 * 2**20]
        for (host, path), future, need in zip(places, free_futures, needs, strict=True):
            free = future.result()
            if free < need:
                raise PreconditionFailed(
                    f"{host}:{path} has {free / 2**20:.0f} MiB free; copying a {size / 2**20:.0f} MiB pe-puppetdb "
                    f"needs about {need / 2**20:.0f} MiB there", hint="free space there (or set PEHA_DUMP_DIR)")
        jobs = jobs_future.result()
    log().info("pe-puppetdb is %.1f MiB; method %s with --jobs=%d", size / 2**20, method, jobs)
    if method == "fast":
        return _fast(book, s, source, target, folder, dump_file, size, jobs, approve)
    return _documented(book, s, source, target, folder, dump_file, size, jobs, approve)


def _plan(book: Runbook, s, method: str, source: str, target: str, dump_file: str) -> None:
    book.planned("size check", source, commands.psql_session("postgres", os_user=s.pg_os_user, bin_dir=s.pg_bin_dir)
                 .description + ": SELECT pg_database_size('pe-puppetdb')")
    book.planned("free space", source, commands.free_bytes(s.dump_dir))
    book.planned("free space", target, commands.free_bytes(s.pg_data_dir if method == "fast" else s.dump_dir))
    if method == "fast":
        staging = "pe-puppetdb" + commands.STAGING_SUFFIX
        book.planned("measure link", source, commands.link_probe(target))
        book.planned("create staging database", target, commands.recreate_database(
            staging, owner="pe-puppetdb", os_user=s.pg_os_user, bin_dir=s.pg_bin_dir))
        book.planned("schema frame", source, commands.pg_dump_schema(file=dump_file, snapshot="0-0-1",
                                                                      os_user=s.pg_os_user, bin_dir=s.pg_bin_dir)
                     .description + " (from the exported snapshot)")
        book.planned("table of contents", source, commands.pg_restore_toc(file=dump_file, os_user=s.pg_os_user,
                                                                          bin_dir=s.pg_bin_dir))
        book.planned("per-table streams", source, commands.stream_table(
            "catalog_resources", snapshot="0-0-1", target=target, staging=staging, compress="zstd",
            os_user=s.pg_os_user, bin_dir=s.pg_bin_dir).description
            + " (one per table, compression by link speed), then on the target that table's own indexes and keys: "
            + commands.pg_restore_listed(file=dump_file, list_file=dump_file + ".catalog_resources.list",
                                         database=staging, jobs=1, os_user=s.pg_os_user, bin_dir=s.pg_bin_dir,
                                         maintenance_mem_mb=s.index_build_memory_mb).description)
        book.planned("rest of post-data (foreign keys, partitioned parents, triggers)", target,
                     commands.pg_restore_listed(file=dump_file, list_file=dump_file + ".late.list", database=staging,
                                                jobs=2, os_user=s.pg_os_user, bin_dir=s.pg_bin_dir,
                                                maintenance_mem_mb=s.index_build_memory_mb))
        book.planned("verify staging against the source snapshot", target,
                     "rows loaded per table (as COPY reported) = source snapshot counts; catalog and certnames digest")
        for name in SERVICES_IN_ORDER:
            book.planned("stop", target, commands.service(name, "stopped"))
        book.planned("swap", target, commands.swap_databases("pe-puppetdb", staging, "pe-puppetdb" + commands.OLD_SUFFIX,
                                                             os_user=s.pg_os_user, bin_dir=s.pg_bin_dir))
    else:
        book.planned("dump", source, commands.pg_dump(file=dump_file, os_user=s.pg_os_user, bin_dir=s.pg_bin_dir))
        book.planned("transfer", source, commands.scp_to(dump_file, host=target, dest=dump_file))
        book.planned("checksum", source, commands.sha256sum(dump_file))
        book.planned("checksum", target, commands.sha256sum(dump_file))
        for name in SERVICES_IN_ORDER:
            book.planned("stop", target, commands.service(name, "stopped"))
        book.planned("restore", target, commands.pg_restore(file=dump_file, jobs=1, os_user=s.pg_os_user,
                                                            bin_dir=s.pg_bin_dir).description + " --jobs=<target CPUs>")
    for name in reversed(SERVICES_IN_ORDER):
        book.planned("start", target, commands.service(name, "running"))
    book.planned("agent run", target, commands.agent_run())
    book.planned("cleanup", source, commands.remove_files(dump_file))
    book.planned("cleanup", target, commands.remove_files(dump_file))


def _stop_services(book: Runbook, target: str, stopped: list[str]) -> float:
    started = time.monotonic()
    with book.step("stop puppet, then pe-puppetdb", target):
        for name in SERVICES_IN_ORDER:
            if services.service_state(target, name) == "running":
                services.set_service(target, name, "stopped")
                stopped.append(name)
    return started


# How long a failing run keeps trying to start again the services it stopped (a link that drops mid-copy
# usually comes back; leaving PuppetDB down on the replica is worse than a slow failure).
RESTART_PATIENCE_S = 180


def _restart(target: str, stopped: list[str], patience_s: float = RESTART_PATIENCE_S) -> list[str]:
    """Start again, in reverse order, the services this flow stopped; returns those that would not start.

    Each start retries connection errors; unreachable hosts are tried again until ``patience_s`` has passed.
    """
    pending = list(reversed(stopped))
    deadline = time.monotonic() + patience_s
    while pending:
        name = pending[0]
        try:
            services.set_service(target, name, "running")
            pending.pop(0)
        except Exception as exc:  # keep trying while there is time: every service we stopped must come back
            if time.monotonic() > deadline or not is_retryable(exc):
                log().error("could not start %s on %s again: %s", name, target, exc)
                break
            log().warning("%s on %s is not started yet (%s); trying again", name, target, exc)
            time.sleep(5)
    stopped.clear()
    return pending


def _services_back(target: str, stopped: list[str]) -> None:
    """The success path: the services must be running again, or the run fails naming them."""
    left_down = _restart(target, stopped)
    if left_down:
        raise PreconditionFailed(f"{target}: {', '.join(left_down)} did not start again after the copy",
                                 hint=f"start them on {target}: puppet resource service <name> ensure=running")


def _cleanup(hosts: tuple[str, ...], path: str) -> None:
    for host in hosts:
        try:
            puppetdb.remove_files(host, path)
        except Exception as exc:  # cleanup must not hide the real outcome; tell the operator instead
            log().error("could not remove %s on %s: %s", path, host, exc)


def _fast(book: Runbook, s, source: str, target: str, folder: str, schema_file: str, size: int, jobs: int,
          approve: bool):
    stopped: list[str] = []
    staging = "pe-puppetdb" + commands.STAGING_SUFFIX
    outcome, swapped, stop_seconds = "failed", False, 0.0
    try:
        with book.step("prepare dump folders", f"{source}, {target}"):
            for future in [puppetdb.prepare_dump_dir.submit(host, folder) for host in (source, target)]:
                future.result()
        # The link is measured (and compression chosen) inside, while the schema frame is made.
        with book.step(f"stream every table into {staging}, building each table's indexes once its rows are in",
                       f"{source} -> {target}"):
            copied = puppetdb.fast_copy_to_staging(source, target, schema_file, None, jobs, source_bytes=size)
        with book.step("verify the staging copy against the source snapshot", target):
            puppetdb.verify_staging(target, copied["fingerprint"], copied["loaded_rows"])
        require_approval(book, f"Stop puppet and pe-puppetdb on {target} briefly and swap in the verified copy of "
                               f"pe-puppetdb from {source} (the current one is kept as pe-puppetdb{commands.OLD_SUFFIX} "
                               "until the swap succeeds).", approved_up_front=approve)
        started = _stop_services(book, target, stopped)
        with book.step("swap the staging database in", target):
            puppetdb.swap_in_staging(target)
            swapped = True
        _services_back(target, stopped)
        stop_seconds = time.monotonic() - started
        outcome = "copied, verified and swapped in"
    except ApprovalRejected as exc:
        outcome = f"not approved: {exc.message}"
        return Cancelled(message=f"copy-puppetdb ended with nothing swapped in: {exc.message}")
    finally:
        if stopped:  # the run is failing: start what it stopped, and let the original error through
            _restart(target, stopped)
        if not swapped:
            try:
                puppetdb.drop_database(target, staging)
            except Exception as exc:  # leave it for the operator, but say so
                log().error("could not drop %s on %s: %s", staging, target, exc)
        _cleanup((source, target), schema_file)
        book.publish_summary(outcome=outcome, notes=[f"database size {size / 2**20:.1f} MiB",
                                                     f"pe-puppetdb stopped for {stop_seconds:.1f} s"])
    # Dropping the old copy (removing its files) and the agent run touch different things: run them at once.
    dropping = puppetdb.drop_database.submit(target, "pe-puppetdb" + commands.OLD_SUFFIX)
    with book.step("puppet agent -t", target):
        code = agent.agent_run(target)
    dropping.result()
    return {"method": "fast", "source": source, "target": target, "bytes": size, "compress": copied["compress"],
            "tables": copied["tables"], "timings": {k: round(v, 2) for k, v in copied["timings"].items()},
            "target_stopped_seconds": round(stop_seconds, 2), "agent_exit_code": code}


def _documented(book: Runbook, s, source: str, target: str, folder: str, dump_file: str, size: int, jobs: int,
                approve: bool):
    stopped: list[str] = []
    outcome, stop_seconds = "failed", 0.0
    try:
        with book.step("prepare dump folders", f"{source}, {target}"):
            puppetdb.prepare_dump_dir(source, folder)
            puppetdb.prepare_dump_dir(target, folder)
        with book.step("pg_dump (snapshot)", source):
            dumped = puppetdb.dump(source, dump_file)
        with book.step("transfer and verify checksum", f"{source} -> {target}"):
            puppetdb.transfer(source, target, dump_file, dump_file)
            sent, received = puppetdb.checksum(source, dump_file), puppetdb.checksum(target, dump_file)
            if sent != received:
                raise TransferError(f"checksum mismatch: sent {sent[:16]}…, received {received[:16]}…; not restored",
                                    host=target, hint="re-run the copy; check the link between the hosts")
        require_approval(book, f"Stop puppet and pe-puppetdb on {target} and replace its pe-puppetdb with the copy "
                               f"from {source} (pg_restore --clean --jobs={jobs}).", approved_up_front=approve)
        started = _stop_services(book, target, stopped)
        try:
            with book.step("pg_restore --clean", target):
                restored = puppetdb.restore(target, dump_file, jobs, source_bytes=size)
            with book.step("verify the copy against the source snapshot", target):
                puppetdb.verify(target, dumped.fingerprint)
        except Exception as exc:
            # From here on the target's pe-puppetdb may hold part of the copy: say so in the run's final state.
            raise DatabaseError(f"{target}: pe-puppetdb is NOT a verified copy of {source}'s (the restore did not "
                                f"finish and verify: {exc})",
                                hint="re-run copy_puppetdb; until then the replica's PuppetDB catches up by "
                                     "replication from the master") from exc
        _services_back(target, stopped)
        stop_seconds = time.monotonic() - started
        outcome = "copied and verified"
    except ApprovalRejected as exc:
        outcome = f"not approved: {exc.message}"
        return Cancelled(message=f"copy-puppetdb ended with nothing restored: {exc.message}")
    finally:
        if stopped:  # the run is failing: start what it stopped, and let the original error through
            _restart(target, stopped)
        _cleanup((source, target), dump_file)
        book.publish_summary(outcome=outcome, notes=[f"database size {size / 2**20:.1f} MiB",
                                                     f"pe-puppetdb stopped for {stop_seconds:.1f} s"])
    with book.step("puppet agent -t", target):
        code = agent.agent_run(target)
    return {"method": "documented", "source": source, "target": target, "bytes": size,
            "restore_exit_code": restored.exit_code, "ignored_restore_errors": len(restored.ignored_errors),
            "timings": {"dump": round(dumped.seconds, 2), "restore": round(restored.seconds, 2)},
            "target_stopped_seconds": round(stop_seconds, 2), "agent_exit_code": code,
            "tables": sum(1 for k in dumped.fingerprint if k.startswith("rows:"))}
