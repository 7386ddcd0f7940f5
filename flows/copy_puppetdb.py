"""Copy PuppetDB to the replica — PE guide, "Manually copy PuppetDB to speed replication".

1. Size check (psycopg: the ``\\l+`` figure) and free space on both ends.
2. ``pg_dump --format=custom --compress=3`` on the master, from a snapshot whose fingerprint is recorded.
3. Transfer with scp; the sha256 on both ends must match (a mismatch is never restored).
4. Stop ``puppet`` then ``pe-puppetdb`` on the replica (approval pause unless approved up front).
5. ``pg_restore --clean --jobs=<replica CPUs>``; success is judged by verifying the result, never by exit code alone.
6. Start both services again — also when a later step failed — then ``puppet agent -t`` on the replica.
7. Remove the dump files.
"""


import uuid
from typing import Literal

from prefect import flow
from prefect.states import Cancelled

from flows._common import Runbook, distinct, installation_lock, inventory_host, log, require_approval, run_name
from pe_ha import commands, runtime
from pe_ha.errors import ApprovalRejected, PreconditionFailed, TransferError
from tasks import agent, puppetdb, services

SERVICES_IN_ORDER = ("puppet", "pe-puppetdb")  # stopped in this order, started in reverse


@flow(name="copy-puppetdb", flow_run_name=run_name("copy-puppetdb", "target", "replica"))
@installation_lock("copy-puppetdb")
def copy_puppetdb(source: str | None = None, target: str | None = None, method: Literal["documented"] = "documented",
                  approve: bool = False, dry_run: bool = False):
    """Copy pe-puppetdb from ``source`` (the master) to ``target`` (the replica) and verify the result."""
    s = runtime.settings()
    source = inventory_host(source, default=s.master.name, what="source")
    target = inventory_host(target, default=s.replica.name if s.replica else None, what="target")
    distinct(source, target, "target")
    run_id = uuid.uuid4().hex[:12]
    folder = f"{s.dump_dir.rstrip('/')}/pe-ha"
    dump_file = f"{folder}/pe-puppetdb-{run_id}.dump"
    book = Runbook("copy-puppetdb", f"{source} -> {target}")
    book.planned("size check", source, "psycopg: SELECT pg_database_size('pe-puppetdb')")
    book.planned("free space", source, commands.free_bytes(s.dump_dir))
    book.planned("free space", target, commands.free_bytes(s.dump_dir))
    book.planned("dump", source, commands.pg_dump(file=dump_file, os_user=s.pg_os_user, bin_dir=s.pg_bin_dir))
    book.planned("transfer", source, commands.scp_to(dump_file, host=target, dest=dump_file))
    book.planned("checksum", source, commands.sha256sum(dump_file))
    book.planned("checksum", target, commands.sha256sum(dump_file))
    for name in SERVICES_IN_ORDER:
        book.planned("stop", target, commands.service(name, "stopped"))
    book.planned("restore", target, commands.pg_restore(file=dump_file, jobs=1, os_user=s.pg_os_user, bin_dir=s.pg_bin_dir)
                 .description + " --jobs=<target CPUs>")
    for name in reversed(SERVICES_IN_ORDER):
        book.planned("start", target, commands.service(name, "running"))
    book.planned("agent run", target, commands.agent_run())
    book.planned("cleanup", source, commands.remove_files(dump_file))
    book.planned("cleanup", target, commands.remove_files(dump_file))
    if dry_run:
        return {"dry_run": True, "plan": book.publish_plan()}

    with book.step("size check", source):
        size = puppetdb.database_size(source)
    need = int(size * 0.5) + 64 * 1024 * 1024  # a Z3 custom dump is ~20 % of the database; keep a wide margin
    with book.step("free space check", f"{source}, {target}"):
        for host in (source, target):
            free = puppetdb.free_bytes(host, s.dump_dir)
            if free < need:
                raise PreconditionFailed(
                    f"{host}:{s.dump_dir} has {free / 2**20:.0f} MiB free; the dump of a {size / 2**20:.0f} MiB "
                    f"pe-puppetdb needs about {need / 2**20:.0f} MiB", hint="free space there or set PEHA_DUMP_DIR")
        jobs = puppetdb.cpu_count(target)
    log().info("pe-puppetdb is %.1f MiB; restoring with --jobs=%d", size / 2**20, jobs)
    stopped: list[str] = []
    outcome = "failed"
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
        with book.step("stop puppet, then pe-puppetdb", target):
            for name in SERVICES_IN_ORDER:
                if services.service_state(target, name) == "running":
                    services.set_service(target, name, "stopped")
                    stopped.append(name)
        with book.step("pg_restore --clean", target):
            restored = puppetdb.restore(target, dump_file, jobs)
        with book.step("verify the copy against the source snapshot", target):
            puppetdb.verify(target, dumped.fingerprint)
        outcome = "copied and verified"
    except ApprovalRejected as exc:
        outcome = f"not approved: {exc.message}"
        return Cancelled(message=f"copy-puppetdb ended with nothing restored: {exc.message}")
    finally:
        # Services this flow stopped are started again whatever happened, in reverse order.
        for name in reversed(stopped):
            services.set_service(target, name, "running")
        for host in (source, target):
            try:
                puppetdb.remove_files(host, dump_file)
            except Exception as exc:  # cleanup must not hide the real outcome; tell the operator instead
                log().error("could not remove %s on %s: %s", dump_file, host, exc)
        book.publish_summary(outcome=outcome, notes=[f"database size {size / 2**20:.1f} MiB"])
    with book.step("puppet agent -t", target):
        code = agent.agent_run(target)
    return {"source": source, "target": target, "bytes": size, "restore_exit_code": restored.exit_code,
            "ignored_restore_errors": len(restored.ignored_errors), "dump_seconds": round(dumped.seconds, 2),
            "restore_seconds": round(restored.seconds, 2), "agent_exit_code": code,
            "tables": sum(1 for k in dumped.fingerprint if k.startswith("rows:"))}
