"""The print history in figures, as the analytics page reads it: a real app on loopback over a
real SQLite file, a history written through the store's own functions, and prints on the
virtual printer proving that a real job records what the figures are made of."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lezerprintd.app import Appliance
from lezerprintd.auth.permissions import Role
from lezerprintd.printer.jobs import plan_of, used_filament
from lezerprintd.printer.virtual import VirtualPrinter
from lezerprintd.store import Store
from lezerprintd.store import jobs as job_rows
from lezerprintd.store.jobs import NO_PLAN, JobStatus, Plan
from tests.conftest import make_config, moves, until
from tests.test_api import Served

COMPLETED, FAILED, CANCELLED = JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED
THERMAL = "The printer halted: Thermal Runaway, system stopped! Heater_ID: 0"
POWER_CUT = "interrupted: the daemon stopped or the power failed while printing"


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The appliance's clock in New York (a POSIX rule: no tz database needed), where local
    days and UTC days differ by five hours."""
    monkeypatch.setenv("TZ", "EST5EDT,M3.2.0,M11.1.0")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def local(day: dt.date, hour: int = 12, minute: int = 0) -> float:
    return time.mktime((day.year, day.month, day.day, hour, minute, 0, 0, 0, -1))


async def add_job(
    store: Store,
    job_id: str,
    status: JobStatus,
    ended: float | None,
    *,
    took: int | None = None,
    plan: Plan = NO_PLAN,
    progress: float = 100.0,
    error: str | None = None,
) -> None:
    """A job as the job room leaves it: created with the file's plan, ended with its figures
    (the filament pro-rated by the room's own rule)."""
    started = None if took is None else (ended or time.time()) - took
    await job_rows.create(
        store, job_id, f"{job_id}.gcode", 100_000, (started or ended or time.time()) - 30,
        plan=plan,
    )  # fmt: skip
    if ended is None:  # still printing
        await job_rows.record(store, job_id, time.time(), status=status, started_at=started)
        return
    length, grams = used_filament(plan, progress)
    await job_rows.record(
        store, job_id, ended, status=status, progress=progress, started_at=started,
        completed_at=ended, actual_time=took, error_message=error, filament_length=length,
        filament_used=grams,
    )  # fmt: skip


async def get(served: Served, path: str, role: Role | None = Role.VIEWER) -> dict[str, Any]:
    status, answer = await served.call("GET", path, role)
    assert status == 200, answer
    assert answer["success"] is True
    data: dict[str, Any] = answer["data"]
    return data


# -- a week of history, as a viewer sees it ----------------------------------------------------


async def recent_history(store: Store) -> dt.date:
    """Seven finished prints in the last week (one day empty), older ones, one printing."""
    today = dt.date.today()

    def ago(days: int, hour: int = 12) -> float:
        return local(today - dt.timedelta(days=days), hour)

    await add_job(store, "a", COMPLETED, ago(0), took=3600, plan=Plan(3000, "PLA", 5000, 15))
    await add_job(
        store,
        "b",
        FAILED,
        ago(0, 13),
        took=600,
        progress=25,
        error=THERMAL,
        plan=Plan(2400, "PLA", 4000, 20),
    )
    await add_job(
        store, "c", CANCELLED, ago(0, 14), took=120, progress=10, plan=Plan(None, "PLA", 2000, 6)
    )
    await add_job(store, "d", COMPLETED, ago(1), took=1800, plan=Plan(2000, "pla", 3000, 9))
    await add_job(
        store, "e", CANCELLED, ago(1, 15), took=300, progress=25, plan=Plan(None, "PETG", 3200, 10)
    )
    # The slicer gave a length but no weight (as Cura does): its grams are unknown.
    await add_job(store, "f", COMPLETED, ago(3), took=1200, plan=Plan(None, "PETG", 4000, None))
    # Cut by a power failure: no measured time, filament by the progress last written.
    await add_job(
        store, "g", FAILED, ago(5), progress=30, error=POWER_CUT, plan=Plan(None, None, 1300, 4)
    )
    await add_job(store, "h", COMPLETED, ago(10), took=7200, plan=Plan(7000, "PLA", 10000, 30))
    await add_job(store, "i", COMPLETED, ago(40), took=100)
    await add_job(store, "j", COMPLETED, ago(400), took=100)
    await add_job(store, "now", JobStatus.PRINTING, None, took=50, plan=Plan(60, "PLA", 10, 1))
    return today  # fmt: skip


async def test_the_dashboard_of_the_last_week(served: Served) -> None:
    today = await recent_history(served.appliance.store)
    data = await get(served, "/api/analytics/dashboard?range=7d")
    trends = data.pop("trends")
    assert data == {
        "from": (today - dt.timedelta(days=6)).isoformat(),
        "to": today.isoformat(),
        "totalPrints": 7,
        "completed": 3,
        "failed": 2,
        "cancelled": 2,
        "successRate": 42.9,  # 3 of 7
        "totalTime": 3600 + 600 + 120 + 1800 + 300 + 1200,
        "averagePrintTime": 2200,  # of the completed: (3600 + 1800 + 1200) / 3
        "materialUsed": 33.3,  # 15 + 20 x 25 % + 6 x 10 % + 9 + 10 x 25 % + 4 x 30 %
        "materialUnknown": 1,
        "estimateAccuracy": {
            "jobs": 2,
            "estimatedTime": 5000,
            "actualTime": 5400,
            "meanRatio": 1.05,  # 3600 / 3000 and 1800 / 2000
        },
    }
    days = [(today - dt.timedelta(days=n)).isoformat() for n in range(6, -1, -1)]
    assert trends == [
        {"date": days[0], "prints": 0, "successRate": None, "time": 0},
        {"date": days[1], "prints": 1, "successRate": 0.0, "time": 0},
        {"date": days[2], "prints": 0, "successRate": None, "time": 0},
        {"date": days[3], "prints": 1, "successRate": 100.0, "time": 1200},
        {"date": days[4], "prints": 0, "successRate": None, "time": 0},
        {"date": days[5], "prints": 2, "successRate": 50.0, "time": 2100},
        {"date": days[6], "prints": 3, "successRate": 33.3, "time": 4320},
    ]


async def test_longer_ranges_take_older_prints_and_a_day_each(served: Served) -> None:
    await recent_history(served.appliance.store)
    expected = {"30d": (8, 4, 50.0), "90d": (9, 5, 55.6), "1y": (9, 5, 55.6)}
    for name, (prints, completed, rate) in expected.items():
        data = await get(served, f"/api/analytics/dashboard?range={name}")
        assert (data["totalPrints"], data["completed"], data["successRate"]) == (
            prints, completed, rate,
        )  # fmt: skip
        assert len(data["trends"]) == {"30d": 30, "90d": 90, "1y": 365}[name]
        assert sum(day["prints"] for day in data["trends"]) == prints
    assert (await get(served, "/api/analytics/dashboard"))["totalPrints"] == 8  # 30d
    # "i" completed with no slicer figures at all: unknown, not 0 g.
    assert (await get(served, "/api/analytics/dashboard?range=90d"))["materialUnknown"] == 2


async def test_filament_by_material(served: Served) -> None:
    await recent_history(served.appliance.store)
    data = await get(served, "/api/analytics/materials?range=7d")
    assert data["materials"] == [
        # "PLA" and "pla" are one material
        {"type": "PLA", "usage": 29.6, "length": 9200.0, "cost": None, "prints": 4,
         "usageUnknown": 0},
        {"type": "PETG", "usage": 2.5, "length": 4800.0, "cost": None, "prints": 2,
         "usageUnknown": 1},
        {"type": None, "usage": 1.2, "length": 390.0, "cost": None, "prints": 1,
         "usageUnknown": 0},
    ]  # fmt: skip


async def test_why_prints_did_not_complete(served: Served) -> None:
    await recent_history(served.appliance.store)
    data = await get(served, "/api/analytics/failures?range=7d")
    assert data["total"] == 4
    assert data["failures"] == [
        {"reason": "Cancelled", "count": 2, "percentage": 50.0},
        {"reason": "Interrupted: the daemon stopped or the power failed", "count": 1,
         "percentage": 25.0},
        {"reason": "Thermal runaway", "count": 1, "percentage": 25.0},
    ]  # fmt: skip
    data = await get(served, "/api/analytics/failures?range=1y")
    assert data["total"] == 4  # the older prints all completed


async def test_no_history_shows_nothing_rather_than_zeros(served: Served) -> None:
    data = await get(served, "/api/analytics/dashboard?range=7d")
    assert (data["totalPrints"], data["successRate"], data["averagePrintTime"]) == (0, None, None)
    assert (data["totalTime"], data["materialUsed"]) == (0, None)
    assert data["estimateAccuracy"] == {
        "jobs": 0, "estimatedTime": 0, "actualTime": 0, "meanRatio": None,
    }  # fmt: skip
    assert [day["prints"] for day in data["trends"]] == [0] * 7
    assert (await get(served, "/api/analytics/materials"))["materials"] == []
    assert (await get(served, "/api/analytics/failures"))["failures"] == []
    # One print, from a file without slicer figures: its grams are unknown, not 0.
    await add_job(served.appliance.store, "plain", COMPLETED, time.time(), took=60)
    data = await get(served, "/api/analytics/dashboard?range=7d")
    assert (data["totalPrints"], data["materialUsed"], data["materialUnknown"]) == (1, None, 1)
    assert (await get(served, "/api/analytics/materials"))["materials"] == [
        {"type": None, "usage": None, "length": None, "cost": None, "prints": 1,
         "usageUnknown": 1},
    ]  # fmt: skip


# -- statistics between two days, by local day, ISO week and month -----------------------------


async def early_2024(store: Store) -> None:
    day = dt.date
    await add_job(store, "before", COMPLETED, local(day(2024, 1, 28), 23, 59), took=10)
    await add_job(
        store, "a", COMPLETED, local(day(2024, 1, 31)), took=600, plan=Plan(None, "PLA", 600, 2)
    )
    # Sunday 23:30 in New York is Monday 04:30 UTC: it belongs to the Sunday's week.
    await add_job(store, "b", FAILED, local(day(2024, 2, 4), 23, 30), took=60, error=THERMAL)
    await add_job(
        store,
        "c",
        COMPLETED,
        local(day(2024, 2, 5), 0, 30),
        took=900,
        plan=Plan(None, "PLA", 900, 3),
    )
    await add_job(
        store,
        "d",
        CANCELLED,
        local(day(2024, 2, 29), 18),
        took=100,
        progress=50,
        plan=Plan(None, "PLA", 300, 1),
    )
    await add_job(
        store,
        "e",
        COMPLETED,
        local(day(2024, 3, 3), 21),
        took=1000,
        plan=Plan(None, "PLA", 1200, 4),
    )
    await add_job(store, "after", COMPLETED, local(day(2024, 3, 4), 0, 10), took=10)  # fmt: skip


def entry(
    period: str,
    days: tuple[str, str],
    counts: tuple[int, int, int, int],
    figures: tuple[float | None, int, float | None],
) -> dict[str, Any]:
    """One period as the API shows it: its days, how its prints ended, (rate, s, g)."""
    prints, completed, failed, cancelled = counts
    rate, seconds, grams = figures
    return {"period": period, "start": days[0], "end": days[1], "prints": prints,
            "completed": completed, "failed": failed, "cancelled": cancelled,
            "successRate": rate, "time": seconds, "materialUsed": grams}  # fmt: skip


async def test_statistics_by_week_and_month_in_local_time(served: Served, new_york: None) -> None:
    await early_2024(served.appliance.store)
    span = "from=2024-01-29&to=2024-03-03"
    data = await get(served, f"/api/analytics/statistics?{span}&groupBy=week")
    assert (data["from"], data["to"], data["groupBy"]) == ("2024-01-29", "2024-03-03", "week")
    assert data["statistics"] == [
        entry("2024-W05", ("2024-01-29", "2024-02-04"), (2, 1, 1, 0), (50.0, 660, 2.0)),
        entry("2024-W06", ("2024-02-05", "2024-02-11"), (1, 1, 0, 0), (100.0, 900, 3.0)),
        entry("2024-W07", ("2024-02-12", "2024-02-18"), (0, 0, 0, 0), (None, 0, None)),
        entry("2024-W08", ("2024-02-19", "2024-02-25"), (0, 0, 0, 0), (None, 0, None)),
        entry("2024-W09", ("2024-02-26", "2024-03-03"), (2, 1, 0, 1), (50.0, 1100, 4.5)),
    ]
    data = await get(served, f"/api/analytics/statistics?{span}&groupBy=month")
    assert data["statistics"] == [
        entry("2024-01", ("2024-01-29", "2024-01-31"), (1, 1, 0, 0), (100.0, 600, 2.0)),
        entry("2024-02", ("2024-02-01", "2024-02-29"), (3, 1, 1, 1), (33.3, 1060, 3.5)),
        entry("2024-03", ("2024-03-01", "2024-03-03"), (1, 1, 0, 0), (100.0, 1000, 4.0)),
    ]
    # A week cut by the range keeps its ISO label; the days outside are not counted.
    data = await get(served, "/api/analytics/statistics?from=2024-01-31&to=2024-02-04&groupBy=week")
    assert data["statistics"] == [
        entry("2024-W05", ("2024-01-31", "2024-02-04"), (2, 1, 1, 0), (50.0, 660, 2.0)),
    ]
    # A browser's toISOString() names a moment: the day it is in New York is meant.
    data = await get(
        served, "/api/analytics/statistics?from=2024-02-05T04:30:00.000Z&to=2024-02-05"
    )
    assert [(d["period"], d["prints"]) for d in data["statistics"]] == [
        ("2024-02-04", 1), ("2024-02-05", 1),
    ]  # fmt: skip


async def test_statistics_default_to_the_last_30_days_by_day(served: Served) -> None:
    await add_job(served.appliance.store, "x", COMPLETED, time.time(), took=60)
    data = await get(served, "/api/analytics/statistics")
    today = dt.date.today()
    assert (data["from"], data["to"], data["groupBy"]) == (
        (today - dt.timedelta(days=29)).isoformat(), today.isoformat(), "day",
    )  # fmt: skip
    assert len(data["statistics"]) == 30
    assert data["statistics"][-1]["prints"] == 1


# -- who may read them, and what is refused ---------------------------------------------------

PATHS = ("dashboard", "materials", "failures", "statistics")


async def test_every_role_reads_them_and_strangers_do_not(served: Served) -> None:
    for path in PATHS:
        for role in Role:
            status, answer = await served.call("GET", f"/api/analytics/{path}", role)
            assert (status, answer["success"]) == (200, True), (path, role)
        status, answer = await served.call("GET", f"/api/analytics/{path}", None)
        assert status == 401
        assert answer["success"] is False
        assert answer["error"]["code"] == "UNAUTHORIZED"


BAD_QUERIES = (
    ("dashboard?range=2w", "range"),
    ("materials?range=", "range"),
    ("failures?range=7d&range=30d", None),  # twice: no one field to name
    ("dashboard?since=2024-01-01", "since"),
    ("statistics?from=2024-02-30", "from"),
    ("statistics?from=yesterday", "from"),
    ("statistics?to=2024-13-01", "to"),
    ("statistics?from=2024-03-01&to=2024-02-01", "from"),
    ("statistics?from=2015-01-01&to=2024-01-01", "from"),  # over five years
    ("statistics?from=1969-12-31&to=1970-01-02", "from"),
    ("statistics?groupBy=year", "groupBy"),
)


async def test_a_bad_query_is_refused_in_the_envelope(served: Served) -> None:
    for query, field in BAD_QUERIES:
        status, answer = await served.call("GET", f"/api/analytics/{query}", Role.VIEWER)
        assert status == 400, query
        assert answer["success"] is False
        assert answer["error"]["code"] == "VALIDATION_ERROR"
        assert answer["error"]["message"].startswith(("invalid request", "each query")), query
        if field is not None:
            assert [problem["field"] for problem in answer["error"]["details"]] == [field], query


async def test_five_years_by_month_is_allowed(served: Served) -> None:
    data = await get(
        served, "/api/analytics/statistics?from=2020-01-01&to=2024-12-31&groupBy=month"
    )
    assert len(data["statistics"]) == 60


# -- what a real print records -------------------------------------------------------------------

SLICED_HEAD = "; generated by PrusaSlicer 2.7.1+linux-x64-GTK3 on 2024-05-01 at 10:00:00 UTC\n"
SLICED_TAIL = """
; filament used [mm] = 1523.45
; filament used [cm3] = 3.66
; filament used [g] = 4.54
; filament_type = PETG
; estimated printing time (normal mode) = 12m 5s
"""


async def upload(served: Served, lines: int, name: str) -> str:
    content = SLICED_HEAD + f"; {name}\nG28\n" + "\n".join(moves(lines)) + SLICED_TAIL
    form = aiohttp.FormData(quote_fields=False)
    form.add_field(
        "file", io.BytesIO(content.encode()), filename=name, content_type="application/octet-stream"
    )
    reply = await served.client.post("/api/files", data=form, headers=served.auth(Role.OPERATOR))
    answer = await reply.json()
    assert reply.status == 201, answer
    file_id: str = answer["data"]["file"]["id"]
    return file_id


async def print_file(served: Served, file_id: str) -> str:
    status, answer = await served.call("POST", f"/api/files/{file_id}/print", Role.OPERATOR)
    assert status == 201, answer
    job_id: str = answer["data"]["job"]["id"]
    return job_id


async def test_a_real_print_records_its_filament_and_the_figures_show_it(served: Served) -> None:
    store, jobs = served.appliance.store, served.appliance.jobs
    whole = await print_file(served, await upload(served, 200, "bracket.gcode"))
    record = await asyncio.wait_for(jobs.wait(whole), 60)
    assert record.status is COMPLETED
    assert record.plan == Plan(725, "PETG", 1523.45, 4.54)  # the slicer's, copied at the start
    assert (record.filament_used, record.filament_length) == (4.54, pytest.approx(1523.45, 0.1))
    assert record.actual_time is not None
    assert record.completed_at is not None

    # Cancelled part-way: the slicer's totals by the share of the file that was sent.
    cut = await print_file(served, await upload(served, 40_000, "tower.gcode"))
    await until(lambda: len(served.virtual.accepted) > 1500, 30, "the print to get going")
    status, _ = await served.call("POST", f"/api/jobs/{cut}/cancel", Role.OPERATOR)
    assert status == 200
    record = await asyncio.wait_for(jobs.wait(cut), 60)
    assert record.status is CANCELLED
    assert 0 < record.progress < 100
    assert record.filament_used == pytest.approx(4.54 * record.progress / 100, abs=0.01)
    assert record.filament_length == pytest.approx(1523.45 * record.progress / 100, abs=0.1)
    assert record.filament_used is not None
    used = 4.54 + record.filament_used

    data = await get(served, "/api/analytics/dashboard?range=7d")
    assert (data["totalPrints"], data["completed"], data["cancelled"]) == (2, 1, 1)
    assert data["successRate"] == 50.0
    assert data["materialUsed"] == pytest.approx(used, abs=0.01)
    assert data["materialUnknown"] == 0
    assert data["trends"][-1]["prints"] == 2
    data = await get(served, "/api/analytics/materials?range=7d")
    [petg] = data["materials"]
    assert (petg["type"], petg["prints"], petg["cost"]) == ("PETG", 2, None)
    assert petg["usage"] == pytest.approx(used, abs=0.01)
    data = await get(served, "/api/analytics/failures?range=7d")
    assert data["failures"] == [{"reason": "Cancelled", "count": 1, "percentage": 100.0}]
    assert await job_rows.get(store, whole) is not None


async def test_a_print_cut_by_a_power_failure_is_charged_its_progress(
    start_virtual: Callable[..., VirtualPrinter], tmp_path: Path
) -> None:
    store = await Store.open(tmp_path / "lezerprint.db")
    await job_rows.create(store, "cut", "benchy.gcode", 1000, time.time(),
                          plan=Plan(3600, "ASA", 2000, 6))  # fmt: skip
    await job_rows.record(store, "cut", time.time(), status=JobStatus.PRINTING,
                          started_at=time.time() - 600, progress=40.0)  # fmt: skip
    await store.close()  # the power went out here
    virtual = start_virtual()
    async with Appliance(make_config(tmp_path, virtual.path)) as appliance:
        record = await job_rows.get(appliance.store, "cut")
    assert record is not None
    assert record.status is FAILED
    assert (record.filament_used, record.filament_length) == (2.4, 800.0)


def test_an_estimate_lezerprint_computed_is_not_taken_for_the_slicers() -> None:
    # The analysis fills in a time the slicer left out; the history compares with the slicer.
    mine = plan_of({"estimatedTime": 500, "filamentLength": 1200.0, "computed": ["estimatedTime"]})
    assert (mine.estimated_time, mine.filament_length) == (None, 1200.0)
    slicers = plan_of({"estimatedTime": 500, "filamentType": "PETG ", "computed": []})
    assert (slicers.estimated_time, slicers.material) == (500, "PETG")
