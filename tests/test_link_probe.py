"""The fast copy compresses only when the link is slower than compressing. The link is measured by two pushes of
incompressible data of different sizes, so what every push pays (sessions, handshakes) cancels out, after an
untimed first push that pays what only the first pays; each size's quickest of two pushes counts."""

from __future__ import annotations

import pytest

from pe_ha import commands
from pe_ha.executor import CommandResult
from tasks import puppetdb_fast

M, R = "master.example.com", "replica.example.com"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.mark.parametrize(("fixed_s", "first_s", "slowed", "link_mb_s", "chosen"), [
    (1.0, 0.0, {}, 100.0, "none"),   # a fast link behind slow sessions: one push alone would read 17 MB/s, compress
    (0.1, 0.0, {}, 12.5, "zstd"),    # 100 Mbit/s
    (0.1, 0.5, {}, 12.5, "zstd"),    # ...whose first push also opens the sessions: timed, it would read 28 MB/s
    (0.1, 0.0, {2: 1.5}, 200.0, "none"),  # the first big push slowed by work beside it: alone, it would read 10 MB/s
    (0.1, 0.0, {1: 0.5}, 12.5, "zstd"),   # the first small push slowed: alone, it would read 28 MB/s
    (0.3, 0.0, {}, 40.0, "none"),
    (0.5, 0.0, {}, float("inf"), "none"),  # both pushes take the same time
])
def test_compression_follows_the_links_own_rate_not_the_sessions_cost(ctx, env, monkeypatch, fixed_s, first_s, slowed,
                                                                      link_mb_s, chosen):
    fake = env[0]
    clock = Clock()
    monkeypatch.setattr(puppetdb_fast.time, "monotonic", clock.monotonic)
    pushed: list[int] = []

    def push(host: str, argv: tuple[str, ...]) -> CommandResult:
        megabytes = int(argv[-1].split("head -c ")[1].split("M")[0])
        clock.now += fixed_s + (first_s if not pushed else 0.0) + slowed.get(len(pushed), 0.0) + megabytes / link_mb_s
        pushed.append(megabytes)
        return CommandResult(host, argv, 0, "", "", 0.0)

    fake.script(M, commands.link_probe(R, megabytes=4).argv[:2], responder=push)
    rate = puppetdb_fast.link_mb_per_s(ctx, M, R)
    assert rate == pytest.approx(link_mb_s)
    assert puppetdb_fast.choose_compression(ctx, M, R, rate) == chosen
    sent = [c.argv for c in fake.calls if c.host == M and "urandom" in c.argv[-1]]
    assert sent == [commands.link_probe(R, megabytes=n).argv for n in (1, 4, 20, 4, 20)]
