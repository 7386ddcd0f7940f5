"""How long a procedure will take, step by step, and what it keeps from serving meanwhile: planned from the facts a
procedure reads before anything changes, with its basis shown beside it.

The copy's figures come from a cost model in seconds per GB of ``pe-puppetdb``, calibrated by ``bench.copy`` in
the lab (``docs/performance.md``); provisioning and enabling have only PE's own figure ("typical installations
take 10-30 minutes") until pe-ha measures them; this installation's past runs correct both. A change window
booked for a run must hold the forecast's high end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

GB = 1e9

# Said by PE's guide for provision and enable: "the master is unavailable to serve catalog requests".
PRIMARY_CATALOGS = "the primary's catalogs"
REPLICA_PUPPETDB = "the replica's PuppetDB"
NO_HISTORY = "history: past runs do not correct these figures yet, so each range is the model's full spread"


@dataclass(frozen=True)
class Estimate:
    """An expected duration and the range it should fall in (seconds)."""

    expected_s: float
    low_s: float
    high_s: float

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(self.expected_s + other.expected_s, self.low_s + other.low_s, self.high_s + other.high_s)

    def text(self) -> str:
        return f"{duration(self.expected_s)} ({duration(self.low_s)} to {duration(self.high_s)})"


NOTHING = Estimate(0.0, 0.0, 0.0)


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def time_left(expected_s: float, elapsed_s: float) -> str:
    """How a long step's progress says where it stands against its forecast; empty without one."""
    if expected_s <= 0:
        return ""
    left = expected_s - elapsed_s
    if left >= 0:
        return f"about {duration(left)} left of the forecast {duration(expected_s)}"
    return f"{duration(-left)} past the forecast {duration(expected_s)}"


def per_gb(size_bytes: int, fixed_s: float, rate: tuple[float, float, float]) -> Estimate:
    """``fixed_s`` plus ``size`` times a (low, expected, high) rate in seconds per GB."""
    low, expected, high = rate
    gb = size_bytes / GB
    return Estimate(fixed_s + gb * expected, fixed_s / 2 + gb * low, fixed_s * 3 + gb * high)


@dataclass(frozen=True)
class StepForecast:
    key: str
    estimate: Estimate
    unavailable: str = ""  # what does not serve while the step runs (PRIMARY_CATALOGS, REPLICA_PUPPETDB), if anything
    basis: str = ""


@dataclass(frozen=True)
class Forecast:
    steps: tuple[StepForecast, ...]
    basis: tuple[str, ...]

    def of(self, key: str) -> StepForecast | None:
        return next((s for s in self.steps if s.key == key), None)

    def total(self, keys: Iterable[str] | None = None) -> Estimate:
        chosen = set(keys) if keys is not None else None
        return sum((s.estimate for s in self.steps if chosen is None or s.key in chosen), NOTHING)

    def unavailable(self, what: str, keys: Iterable[str] | None = None) -> Estimate:
        chosen = set(keys) if keys is not None else None
        return sum((s.estimate for s in self.steps if s.unavailable == what and (chosen is None or s.key in chosen)),
                   NOTHING)

    def corrected(self, ratios: Mapping[str, Sequence[float]]) -> Forecast:
        """The same forecast, each step with a history (actual over expected, in this installation's past runs)
        scaled by its median ratio, within half again either side of the corrected figure."""
        steps, used = [], 0
        for s in self.steps:
            past = sorted(ratios.get(s.key, ()))
            if not past or s.estimate.expected_s <= 0:
                steps.append(s)
                continue
            used = max(used, len(past))
            expected = s.estimate.expected_s * past[len(past) // 2]
            steps.append(StepForecast(s.key, Estimate(expected, expected / 1.5, expected * 1.5), s.unavailable,
                                      f"{s.basis}; corrected by {len(past)} past run(s)"))
        if not used:
            return self
        basis = tuple(b for b in self.basis if b != NO_HISTORY) + (
            f"history: steps measured in up to {used} of this installation's past runs are corrected by the median "
            "of actual over expected; the others keep the model's range",)
        return Forecast(tuple(steps), basis)

    def lines(self, keys: Iterable[str] | None = None) -> list[str]:
        """The totals and the basis, as the plan, the approval and the summary show them."""
        keys = list(keys) if keys is not None else None
        out = [f"expected total: {self.total(keys).text()}"]
        for what in (PRIMARY_CATALOGS, REPLICA_PUPPETDB):
            if any(s.unavailable == what for s in self.steps):
                out.append(f"{what} unavailable for: {self.unavailable(what, keys).text()}")
        if not any(s.unavailable == PRIMARY_CATALOGS for s in self.steps):
            out.append(f"{PRIMARY_CATALOGS}: served throughout")
        return out + [f"basis: {b}" for b in self.basis]


# -- the copy ------------------------------------------------------------------------------------------------
#
# Seconds per GB of pe-puppetdb as (low, expected, high), measured by bench.copy on one pinned core per end (the
# split model, docs/performance.md, 250 to 4,000 nodes, synthetic and PuppetDB-written data): the documented
# dump 5.7-9.7 s/GB; its restore 23-31 s/GB (pg_restore --jobs=1); the fast copy's streams and index builds
# 22-53 s/GB; a custom-format dump at 6-21 % of the database. More cores than the one measured are taken to help
# only in the low end of each range.
DUMP_S_PER_GB = (4.0, 6.0, 14.0)
RESTORE_S_PER_GB = (18.0, 25.0, 40.0)
FAST_S_PER_GB = (18.0, 30.0, 55.0)
VERIFY_S_PER_GB = (0.5, 2.0, 6.0)  # the documented copy's check: row counts and digests of the restored rows
DUMP_SHARE = (0.06, 0.1, 0.25)
# What the fast copy's streams put on the link, as a share of the database: 0.57 uncompressed, 0.073 with zstd
# (bench.copy at 1,000 nodes: 737 and 95 MB for 1.30 GB); it compresses below COMPRESS_BELOW_MB_S, which lies
# between a 100 Mbit/s link (12.5 MB/s) and what one core streams and compresses.
STREAM_SHARE = {"none": 0.57, "zstd": 0.073}
COMPRESS_BELOW_MB_S = 18.0
UNMEASURED_LINK_MB_S = (110.0, 40.0, 12.5)  # fast, expected, slow: a gigabit LAN down to 100 Mbit/s

COPY_FIXED: dict[str, tuple[Estimate, str]] = {
    "prepare": (Estimate(1, 0.5, 10), ""),
    "approval": (NOTHING, ""),
    "stop": (Estimate(5, 2, 30), REPLICA_PUPPETDB),
    # the staging catalog and the certnames digest; the row counts are COPY's own: 0.1-0.2 s at 5 GB (session 22)
    "verify-staging": (Estimate(1, 0.1, 10), ""),
    "swap": (Estimate(2, 1, 20), REPLICA_PUPPETDB),
    "start": (Estimate(10, 3, 60), REPLICA_PUPPETDB),
    "accept": (Estimate(20, 5, 120), ""),  # PuppetDB's own start on the copy, then its counts
    "drop-staging": (NOTHING, ""),  # only after a failure
    "remove-dump": (Estimate(1, 0.5, 10), ""),
    "agent-run": (Estimate(30, 10, 180), ""),
}


def copy_forecast(method: str, step_keys: Sequence[str], *, size_bytes: int, cpus: int,
                  link_mb_s: float | None) -> Forecast:
    """The copy's steps (``step_keys``, in order) for a pe-puppetdb of ``size_bytes``, ``cpus`` on the target and
    the link the fast copy measured (``None``: not measured)."""
    gb = size_bytes / GB
    more_cores = max(1, min(cpus, 8))

    def spread(estimate: Estimate) -> Estimate:  # only the low end gains from cores the model was not measured on
        return Estimate(estimate.expected_s, estimate.low_s / more_cores ** 0.5, estimate.high_s)

    if link_mb_s is None:
        fast, expected, slow = UNMEASURED_LINK_MB_S
        link = f"link not measured: {fast:g} to {slow:g} MB/s assumed"
    else:
        fast = expected = slow = link_mb_s
        link = f"link measured at {'more than 1000' if link_mb_s == float('inf') else f'{link_mb_s:.0f}'} MB/s"
    dump_mb = [gb * share * 1000 for share in DUMP_SHARE]
    transfer = Estimate(2 + dump_mb[1] / expected, 1 + dump_mb[0] / fast, 10 + dump_mb[2] / slow)
    variable: dict[str, tuple[Estimate, str, str]] = {
        "dump": (per_gb(size_bytes, 2, DUMP_S_PER_GB), "", f"pg_dump at {DUMP_S_PER_GB[1]:g} s/GB"),
        "transfer": (transfer, "", f"the dump ({DUMP_SHARE[1]:.0%} of the database) over the {link}"),
        "restore": (spread(per_gb(size_bytes, 3, RESTORE_S_PER_GB)), REPLICA_PUPPETDB,
                    f"pg_restore at {RESTORE_S_PER_GB[1]:g} s/GB"),
        "verify": (per_gb(size_bytes, 2, VERIFY_S_PER_GB), REPLICA_PUPPETDB, "row counts and digests"),
        "copy": (stream_bound(spread(per_gb(size_bytes, 6, FAST_S_PER_GB)), size_bytes, (fast, expected, slow)), "",
                 f"streams and index builds at {FAST_S_PER_GB[1]:g} s/GB, or the link where it is slower; {link}"),
    }
    steps = []
    for key in step_keys:
        if key in variable:
            estimate, unavailable, basis = variable[key]
        elif key in COPY_FIXED:
            (estimate, unavailable), basis = COPY_FIXED[key], "fixed"
        else:
            raise KeyError(f"the copy's forecast has no model for step {key!r}")
        steps.append(StepForecast(key, estimate, unavailable, basis))
    return Forecast(tuple(steps), (
        f"{method} copy of a {gb:.2f} GB pe-puppetdb to a target with {cpus} CPUs; {link}",
        "cost model: bench.copy in pe-ha's lab, one core per end (docs/performance.md)",
        "the operator's approval time is not included; the primary only serves reads to the copy",
        NO_HISTORY))


def stream_bound(cpu: Estimate, size_bytes: int, link_mb_s: tuple[float, float, float]) -> Estimate:
    """The fast copy takes the longer of its own work and what its streams put on the link."""
    def on_link(rate: float) -> float:
        share = STREAM_SHARE["zstd" if rate < COMPRESS_BELOW_MB_S else "none"]
        return size_bytes * share / 1e6 / rate

    fast, expected, slow = link_mb_s
    return Estimate(max(cpu.expected_s, on_link(expected)), max(cpu.low_s, on_link(fast)), max(cpu.high_s, on_link(slow)))


# -- provisioning and enabling: PE's own figure ---------------------------------------------------------------

PE_TYPICAL = Estimate(20 * 60, 10 * 60, 30 * 60)  # "Typical installations take 10-30 minutes" (PE's guide)


def guide_forecast(step_keys: Sequence[str], *, unavailable_during: Sequence[str], fixed_s: float = 10) -> Forecast:
    """Steps that PE's guide times only as a whole: the steps in ``unavailable_during`` share the guide's 10-30
    minutes, while the primary does not serve catalogs; every other step is short."""
    share = sum(1 for key in step_keys if key in unavailable_during) or 1
    steps = tuple(
        StepForecast(key, Estimate(PE_TYPICAL.expected_s / share, PE_TYPICAL.low_s / share, PE_TYPICAL.high_s / share),
                     PRIMARY_CATALOGS, "PE's guide: typical installations take 10-30 minutes")
        if key in unavailable_during else StepForecast(key, Estimate(fixed_s, 1, fixed_s * 6), "", "fixed")
        for key in step_keys)
    return Forecast(steps, (
        "PE's guide: \"the master is unavailable to serve catalog requests\" during this task; \"typical "
        "installations take 10-30 minutes\", depending on the size of PuppetDB and the hardware",
        "pe-ha has no model of its own for these steps yet", NO_HISTORY))


# -- change windows --------------------------------------------------------------------------------------------

MAX_WINDOW_MINUTES = 7 * 24 * 60


@dataclass(frozen=True)
class ChangeWindow:
    """The change window an operator booked for a run: ``minutes`` from the run's scheduled start (UTC)."""

    starts: datetime
    minutes: float

    @property
    def ends(self) -> datetime:
        return self.starts + timedelta(minutes=self.minutes)

    def left_s(self, now: datetime) -> float:
        return (self.ends - now).total_seconds()

    def misfit(self, total: Estimate, now: datetime) -> str | None:
        """Why a run expected to take ``total`` cannot start at ``now`` in this window, or ``None``: the window must
        hold the forecast's high end, since the destructive steps, once begun, must finish."""
        left = self.left_s(now)
        if total.high_s <= left:
            return None
        return (f"the forecast, {total.text()}, does not fit the change window: {duration(max(left, 0))} of its "
                f"{duration(self.minutes * 60)} are left (it ends {self.ends:%Y-%m-%d %H:%M} UTC), and the run could "
                f"take up to {duration(total.high_s)}")

    def overrun(self, remaining: Estimate, now: datetime) -> datetime | None:
        """The new expected end when the steps left (``remaining``) are expected to end after the window."""
        expected_end = now + timedelta(seconds=remaining.expected_s)
        return expected_end if expected_end > self.ends else None


def window_minutes_problem(minutes: float | None) -> str | None:
    if minutes is None:
        return None
    if not 0 < minutes <= MAX_WINDOW_MINUTES:
        return f"window_minutes={minutes:g}: must be more than 0 and at most {MAX_WINDOW_MINUTES} (7 days)"
    return None
