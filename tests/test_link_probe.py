"""The fast copy compresses only when the link is slower than compressing. The link is timed by the target as the
probe's data arrives, after a lead that carries the connection through TCP's slow start: what one push pays
before data flows (pe-ha's session, ssh's handshake) is not in the figure."""

from __future__ import annotations

import pytest

from pe_ha import commands
from pe_ha.errors import PreconditionFailed
from tasks import puppetdb_fast
from tasks.copy_plan import COMPRESSORS, choose_compression

M, R = "master.example.com", "replica.example.com"


def test_the_probe_is_one_push_timed_where_it_arrives():
    argv = commands.link_probe(R, lead_mb=4, timed_mb=20).argv
    assert argv[:2] == ("bash", "-c")
    assert argv[2] == (
        "set -o pipefail; head -c 24M /dev/zero | ssh -o BatchMode=yes -o ConnectTimeout=10 -o Compression=no -c "
        "aes128-gcm@openssh.com replica.example.com 'dd bs=1M count=4 iflag=fullblock of=/dev/null 2>/dev/null && "
        "date +%s.%N && dd bs=1M count=20 iflag=fullblock of=/dev/null 2>/dev/null && date +%s.%N'")


@pytest.mark.parametrize(("arrivals", "link_mb_s", "chosen"), [
    ("1000.250000000\n1001.850000000\n", 13.1072, "zstd"),   # about 100 Mbit/s: 20 MiB in 1.6 s
    ("1000.250000000\n1000.270000000\n", 1048.576, "none"),  # unlimited
    ("1000.250000000\n1000.750000000\n", 41.94304, "none"),
    ("1000.250000000\n1000.250000000\n", float("inf"), "none"),  # faster than the clock tells
])
def test_compression_follows_the_rate_the_target_saw(ctx, env, arrivals, link_mb_s, chosen):
    fake = env[0]
    fake.script(M, commands.link_probe(R).argv[:2], stdout=arrivals, override=True)
    rate = puppetdb_fast.link_mb_per_s(ctx, M, R)
    assert rate == pytest.approx(link_mb_s)
    assert choose_compression(rate, COMPRESSORS) == chosen
    assert [c.argv for c in fake.calls if c.host == M and "/dev/zero" in c.argv[-1]] == [commands.link_probe(R).argv]


@pytest.mark.parametrize(("missing", "compressors", "on_a_slow_link"), [
    ((), ("zstd", "gzip"), "zstd"),
    (((R, "zstd"),), ("gzip",), "gzip"),  # zstd on one end only: it cannot decompress there
    (((M, "zstd"), (R, "gzip")), (), "none"),
])
def test_a_compressor_is_used_only_when_both_ends_have_it(ctx, env, missing, compressors, on_a_slow_link):
    fake = env[0]
    for host, tool in missing:
        fake.script(host, commands.has_tool(tool).argv, exit_code=1)
    assert puppetdb_fast.installed_compressors(ctx, M, R) == compressors
    assert choose_compression(12.5, compressors) == on_a_slow_link
    assert choose_compression(40.0, compressors) == "none"


def test_a_probe_without_arrival_times_is_refused_by_name(ctx, env):
    env[0].script(M, commands.link_probe(R).argv[:2], stdout="bash: dd: command not found\n", override=True)
    with pytest.raises(PreconditionFailed, match="printed no arrival times"):
        puppetdb_fast.link_mb_per_s(ctx, M, R)
