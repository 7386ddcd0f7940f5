"""A PuppetDB schema described object by object, so the lab's reconstruction (lab/pdbschema.py) can be held
against what PuppetDB's own migrations build (tests/lab/test_real_puppetdb.py). Day children and their
indexes are named with ``<day>`` in place of the date: both sides make them around today."""

from __future__ import annotations

import re

import psycopg

_DAY = re.compile(r"_20\d{6}z")
_DAY_LITERAL = re.compile(r"'20\d\d-\d\d-\d\d[^']*'")

QUERIES = {
    "table": """SELECT c.relname, c.relkind::text || CASE WHEN c.relispartition THEN ' partition' ELSE '' END
                       || ' owner=' || pg_get_userbyid(c.relowner)
                       || coalesce(' inherits=' || (SELECT string_agg(p.relname, ',') FROM pg_inherits i
                                                    JOIN pg_class p ON p.oid = i.inhparent WHERE i.inhrelid = c.oid), '')
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')""",
    "column": """SELECT c.relname || '.' || a.attname,
                        format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                        || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped""",
    "index": """SELECT indexname, regexp_replace(indexdef, ' USING ', ' USING ') FROM pg_indexes WHERE schemaname = 'public'""",
    "constraint": """SELECT c.relname || '.' || k.conname, k.contype::text || ' ' || pg_get_constraintdef(k.oid)
                     FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = 'public'""",
    "sequence": """SELECT s.relname, 'owner=' || pg_get_userbyid(s.relowner) || coalesce(' owned by ' || t.relname || '.' || a.attname, '')
                   FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace
                   LEFT JOIN pg_depend d ON d.objid = s.oid AND d.deptype = 'a' AND d.classid = 'pg_class'::regclass
                   LEFT JOIN pg_class t ON t.oid = d.refobjid
                   LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                   WHERE n.nspname = 'public' AND s.relkind = 'S'""",
    "trigger": """SELECT c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
                  JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'public' AND NOT t.tgisinternal""",
    "function": """SELECT p.proname, pg_get_function_identity_arguments(p.oid) || ' owner=' || pg_get_userbyid(p.proowner)
                   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname = 'public' AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')""",
    "grant": """SELECT c.relname || ' to ' || coalesce(nullif(a.grantee::regrole::text, '-'), 'PUBLIC'),
                       string_agg(a.privilege_type, ',' ORDER BY a.privilege_type)
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
                WHERE n.nspname = 'public' AND a.grantee <> c.relowner GROUP BY 1""",
    "migration": "SELECT 'schema_migrations', string_agg(version::text, ',' ORDER BY version) FROM schema_migrations",
}


def _norm(text: str) -> str:
    return _DAY_LITERAL.sub("'<day>'", _DAY.sub("_<day>z", text))


def describe(conn: psycopg.Connection) -> dict[str, str]:
    """``{"<kind> <name>": "<definition>"}`` for every object of the public schema."""
    out: dict[str, str] = {}
    for kind, query in QUERIES.items():
        for name, definition in conn.execute(query).fetchall():  # type: ignore[arg-type]
            out[f"{kind} {_norm(name)}"] = _norm(str(definition))
    return out


def compare(real: dict[str, str], reconstruction: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """What differs: ``{key: (real, reconstruction)}``, None where one side lacks the object."""
    return {k: (real.get(k), reconstruction.get(k)) for k in sorted(real.keys() | reconstruction.keys())
            if real.get(k) != reconstruction.get(k)}


def render(diff: dict[str, tuple[str | None, str | None]]) -> str:
    """One block per difference, stable, for the reviewed listing the test compares with."""
    lines = []
    for key, (real, reconstruction) in diff.items():
        lines += [key, f"  puppetdb: {real if real is not None else '(none)'}",
                  f"  pdbschema: {reconstruction if reconstruction is not None else '(none)'}"]
    return "\n".join(lines) + "\n"


def build_reconstruction(cfg, host, database: str = "pdbschema-reconstruction") -> None:
    """lab/pdbschema.py's schema for ``cfg``'s profile, in a scratch database on ``host`` (as the lab builds it)."""
    from lab import pdbschema
    from lab.core import node_run
    from lab.pdbgen import PSQL, create_database

    create_database(cfg, host, database)
    node_run(host, *PSQL, "-d", database, input=pdbschema.database_grants_sql(cfg.profile), as_postgres=True)
    node_run(host, *PSQL, "-d", database, "-1", input='SET ROLE "pe-puppetdb";\n' + pdbschema.schema_sql(cfg.profile),
             as_postgres=True)
