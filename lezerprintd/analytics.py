"""History aggregates: prints, success rate, print time, filament and failures over a period.

Rules this module must not break:
- SQLite does the counting: aggregates (GROUP BY) over `print_jobs`, found through the
  `completed_at` index. Python only fills in the periods without prints and rounds; it never
  loops over jobs, and it never reads telemetry (temperature_logs, print_events).
- An unknown figure is None, never 0: grams only where the slicer stated a weight, a cost only
  where one was recorded, a rate only where there was something to divide by.
- Days are the appliance's local calendar days (SQLite's 'localtime' and `time.mktime` read
  the same TZ), and a print belongs to the day it ended.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from lezerprintd.store import Row, Store

# The unary + keeps SQLite off the status index: without ANALYZE it would pick that one (an
# equality) over the completed_at range, and read every finished job the appliance ever ran.
FINISHED: Final = "+status IN ('COMPLETED', 'FAILED', 'CANCELLED')"
# `range` of the dashboard, materials and failures: that many days up to and including today.
RANGES: Final = {"7d": 7, "30d": 30, "90d": 90, "1y": 365}
MAX_DAYS: Final = 5 * 366  # statistics over longer than about five years are refused
REASON_LENGTH: Final = 120  # a firmware message longer than this is cut when grouped


class GroupBy(enum.Enum):
    DAY = "day"
    WEEK = "week"  # ISO weeks, Monday to Sunday
    MONTH = "month"


# The first day of a finished job's period, as SQLite computes it in local time. 'weekday 0'
# moves forward to a Sunday (or stays on one); six days back is that week's Monday.
_PERIOD_START: Final = {
    GroupBy.DAY: "date(completed_at, 'unixepoch', 'localtime')",
    GroupBy.WEEK: "date(completed_at, 'unixepoch', 'localtime', 'weekday 0', '-6 days')",
    GroupBy.MONTH: "date(completed_at, 'unixepoch', 'localtime', 'start of month')",
}

# What users would recognise as the reason a print did not complete: the messages
# printer/printer.py and printer/jobs.py record, by kind; anything else (a firmware's own
# halt message) as it was written. First match wins.
_REASON: Final = f"""CASE
    WHEN status = 'CANCELLED' THEN 'Cancelled'
    WHEN error_message IS NULL OR trim(error_message) = '' THEN 'Failed (no reason recorded)'
    WHEN lower(error_message) LIKE '%thermal runaway%' THEN 'Thermal runaway'
    WHEN lower(error_message) LIKE 'emergency stop%' THEN 'Emergency stop'
    WHEN lower(error_message) LIKE 'interrupted%'
        OR lower(error_message) LIKE 'the daemon is stopping%'
        THEN 'Interrupted: the daemon stopped or the power failed'
    WHEN lower(error_message) LIKE 'the printer was %' THEN 'The printer was disconnected'
    WHEN lower(error_message) LIKE 'the printer restarted%' THEN 'The printer restarted'
    WHEN lower(error_message) LIKE 'could not start%' THEN 'Could not start'
    WHEN lower(error_message) LIKE 'could not read %' THEN 'Could not read the file'
    WHEN lower(error_message) LIKE 'a line of the file is too long%'
        THEN 'A line of the file is too long for the printer'
    WHEN lower(error_message) LIKE 'internal error%' THEN 'Internal error'
    ELSE substr(trim(error_message), 1, {REASON_LENGTH})
END"""

# The figures every grouping needs, as SQL aggregates over finished jobs. TOTAL() is 0.0 over
# no rows where SUM() is NULL: time is a sum of what was measured; grams stay NULL when no
# job in the group knew its filament.
_COUNTS: Final = """COUNT(*) AS prints,
    TOTAL(status = 'COMPLETED') AS completed,
    TOTAL(status = 'FAILED') AS failed,
    TOTAL(status = 'CANCELLED') AS cancelled,
    TOTAL(actual_time) AS time,
    SUM(filament_used) AS grams"""


@dataclass(frozen=True, slots=True)
class Period:
    """Whole local days, `first` to `last` inclusive."""

    first: dt.date
    last: dt.date

    @classmethod
    def last_days(cls, days: int, today: dt.date | None = None) -> Period:
        end = today or dt.date.today()
        return cls(end - dt.timedelta(days=days - 1), end)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def bounds(self) -> tuple[float, float]:
        """Unix seconds from the first day's local midnight to the one after the last day."""
        return _midnight(self.first), _midnight(self.last + dt.timedelta(days=1))


@dataclass(frozen=True, slots=True)
class Tally:
    """Finished prints in one stretch of time."""

    prints: int
    completed: int
    failed: int
    cancelled: int
    time: int  # s, the measured print time of them all
    material_used: float | None  # g; None when none of them had a known weight

    @property
    def success_rate(self) -> float | None:
        """Percent of the finished prints that completed."""
        return None if self.prints == 0 else round(100 * self.completed / self.prints, 1)


EMPTY: Final = Tally(0, 0, 0, 0, 0, None)


@dataclass(frozen=True, slots=True)
class Stretch:
    """One period of a grouped history (a day, an ISO week, a month), cut to the asked range."""

    label: str  # "2024-05-01", "2024-W18", "2024-05"
    first: dt.date
    last: dt.date
    tally: Tally


@dataclass(frozen=True, slots=True)
class EstimateAccuracy:
    """The slicer's estimate against the measured time, over completed prints with both."""

    jobs: int
    estimated_time: int  # s, summed
    actual_time: int  # s, summed
    mean_ratio: float | None  # mean of actual / estimated: 1.10 means 10 % longer than said


@dataclass(frozen=True, slots=True)
class Dashboard:
    period: Period
    tally: Tally
    material_unknown: int  # finished prints whose filament use is not known
    average_print_time: int | None  # s, over completed prints with a measured time
    accuracy: EstimateAccuracy
    days: list[Stretch]


@dataclass(frozen=True, slots=True)
class MaterialUse:
    material: str | None  # upper-cased as the slicer named it; None: the slicer did not say
    grams: float | None
    length: float | None  # mm
    cost: float | None
    prints: int
    grams_unknown: int  # of those prints, how many had no known weight (not in `grams`)


@dataclass(frozen=True, slots=True)
class FailureReason:
    reason: str
    count: int
    percentage: float  # of the prints in the period that did not complete


class Analytics:
    """Reads the print history; never writes."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def dashboard(self, period: Period) -> Dashboard:
        start, end = period.bounds()
        # Completed prints with both an estimate and a measured time.
        compared = "status = 'COMPLETED' AND estimated_time > 0 AND actual_time > 0"
        row = await self._store.fetchone(
            f"""SELECT {_COUNTS},
                COUNT(*) - COUNT(filament_used) AS unknown,
                AVG(CASE WHEN status = 'COMPLETED' THEN actual_time END) AS average,
                TOTAL({compared}) AS compared,
                TOTAL(CASE WHEN {compared} THEN estimated_time END) AS estimated,
                TOTAL(CASE WHEN {compared} THEN actual_time END) AS actual,
                AVG(CASE WHEN {compared} THEN CAST(actual_time AS REAL) / estimated_time END)
                    AS ratio
            FROM print_jobs
            WHERE completed_at >= ? AND completed_at < ? AND {FINISHED}""",
            (start, end),
        )
        assert row is not None  # an aggregate without GROUP BY always answers one row
        accuracy = EstimateAccuracy(
            int(row["compared"]),
            int(row["estimated"]),
            int(row["actual"]),
            None if row["ratio"] is None else round(row["ratio"], 3),
        )
        average = row["average"]
        return Dashboard(
            period=period,
            tally=_tally(row),
            material_unknown=int(row["unknown"]),
            average_print_time=None if average is None else round(average),
            accuracy=accuracy,
            days=await self.history(period, GroupBy.DAY),
        )

    async def history(self, period: Period, group_by: GroupBy) -> list[Stretch]:
        """Every day, week or month of `period`, those without prints included."""
        start, end = period.bounds()
        key = _PERIOD_START[group_by]
        rows = await self._store.fetchall(
            f"""SELECT {key} AS period, {_COUNTS}
            FROM print_jobs
            WHERE completed_at >= ? AND completed_at < ? AND {FINISHED}
            GROUP BY period""",
            (start, end),
        )
        found = {dt.date.fromisoformat(row["period"]): _tally(row) for row in rows}
        return [
            Stretch(_label(first, group_by), max(first, period.first), min(last, period.last),
                    found.get(first, EMPTY))
            for first, last in _periods(period, group_by)
        ]  # fmt: skip

    async def materials(self, period: Period) -> list[MaterialUse]:
        """Filament by material, the most used first."""
        start, end = period.bounds()
        rows = await self._store.fetchall(
            f"""SELECT upper(nullif(trim(material), '')) AS kind,
                SUM(filament_used) AS grams,
                SUM(filament_length) AS length,
                SUM(CAST(cost AS REAL)) AS cost,
                COUNT(*) AS prints,
                COUNT(*) - COUNT(filament_used) AS unknown
            FROM print_jobs
            WHERE completed_at >= ? AND completed_at < ? AND {FINISHED}
            GROUP BY kind
            ORDER BY grams DESC NULLS LAST, prints DESC, kind""",
            (start, end),
        )
        return [
            MaterialUse(
                row["kind"],
                None if row["grams"] is None else round(row["grams"], 2),
                None if row["length"] is None else round(row["length"], 1),
                None if row["cost"] is None else round(row["cost"], 2),
                int(row["prints"]),
                int(row["unknown"]),
            )
            for row in rows
        ]

    async def failures(self, period: Period) -> list[FailureReason]:
        """Why prints did not complete, the most frequent reason first."""
        start, end = period.bounds()
        rows = await self._store.fetchall(
            f"""SELECT {_REASON} AS reason, COUNT(*) AS count
            FROM print_jobs
            WHERE completed_at >= ? AND completed_at < ?
                AND +status IN ('FAILED', 'CANCELLED')
            GROUP BY reason
            ORDER BY count DESC, reason""",
            (start, end),
        )
        total = sum(int(row["count"]) for row in rows)  # one row per reason
        return [
            FailureReason(row["reason"], int(row["count"]), round(100 * row["count"] / total, 1))
            for row in rows
        ]


def _tally(row: Row) -> Tally:
    grams = row["grams"]
    return Tally(
        int(row["prints"]),
        int(row["completed"]),
        int(row["failed"]),
        int(row["cancelled"]),
        int(row["time"]),
        None if grams is None else round(grams, 2),
    )


def _midnight(day: dt.date) -> float:
    # isdst -1: the C library decides, so a day that starts in summer time starts at its
    # real local midnight.
    return time.mktime((day.year, day.month, day.day, 0, 0, 0, 0, 0, -1))


def _periods(period: Period, group_by: GroupBy) -> Sequence[tuple[dt.date, dt.date]]:
    """(first day, last day) of each whole day, ISO week or month touching `period`."""
    one_day = dt.timedelta(days=1)
    if group_by is GroupBy.DAY:
        return [(day, day) for day in _days(period.first, period.days)]
    if group_by is GroupBy.WEEK:
        monday = period.first - dt.timedelta(days=period.first.weekday())
        weeks = (period.last - monday).days // 7 + 1
        return [
            (monday + dt.timedelta(weeks=n), monday + dt.timedelta(weeks=n, days=6))
            for n in range(weeks)
        ]
    out = []
    first = period.first.replace(day=1)
    while first <= period.last:
        following = (first + dt.timedelta(days=32)).replace(day=1)
        out.append((first, following - one_day))
        first = following
    return out


def _days(first: dt.date, count: int) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range(count)]


def _label(first: dt.date, group_by: GroupBy) -> str:
    if group_by is GroupBy.WEEK:
        year, week, _ = first.isocalendar()
        return f"{year}-W{week:02d}"
    if group_by is GroupBy.MONTH:
        return first.strftime("%Y-%m")
    return first.isoformat()
