"""Every command pe-ha runs on a PE node, built in one place (this package) as an argv list.

Inputs are validated (``pe_ha.validation``) before a command is built. Nothing here quotes: the
executor joins argv with ``shlex.join`` at the SSH boundary, and nowhere else (a pipeline's stages are
quoted where the pipeline is built). Forms and flags follow PE's "Configure high availability" guide and
the flags PE's own tooling passes (see docs/commands.md).
"""

from pe_ha.commands._base import (  # noqa: F401
    AGENT_NODES_QUERY,
    PCP_PORT,
    PE_CURL,
    PUPPET,
    PUPPET_PORT,
    PUPPETDB_LOOPBACK,
    Command,
    is_ipv4,
)
from pe_ha.commands.postgres import (  # noqa: F401
    OLD_SUFFIX,
    PSQL_FIELD_SEPARATOR,
    ROWS_MARK,
    STAGING_SUFFIX,
    copy_sequences,
    drop_database,
    has_tool,
    link_probe,
    pg_dump,
    pg_dump_schema,
    pg_restore,
    pg_restore_listed,
    pg_restore_section,
    pg_restore_toc,
    psql,
    psql_database_size,
    psql_session,
    recreate_database,
    schema_toc,
    set_public_schema_grants,
    stream_table,
    stream_tables_merged,
    swap_databases,
    write_restore_lists,
)
from pe_ha.commands.puppet import (  # noqa: F401
    agent_last_run_summary,
    agent_run,
    config_delete,
    config_print,
    config_set,
    enable_ha_failover,
    enable_replica,
    forget_replica,
    infrastructure_status,
    promote_replica,
    provision_replica,
    puppetdb_query,
    puppetdb_status,
    reinitialize_replica,
    service,
)
from pe_ha.commands.system import (  # noqa: F401
    DRILL_COMMENT,
    copy_preserving,
    cpu_count,
    drill_block,
    drill_unblock,
    file_exists,
    free_bytes,
    list_drill_rules,
    make_dir,
    make_readable,
    pe_version,
    read_pe_conf,
    remove_files,
    resolve_ipv4,
    scp_to,
    service_state,
    sha256sum,
    ssh_check,
    tcp_probe,
    tcp_probe_ports,
)
