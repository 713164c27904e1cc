"""The print history in figures, for the analytics page: a dashboard, filament by material,
failure reasons, and statistics per day, week or month. Everyone who may read jobs reads them
(`analytics:view`); they cover the whole appliance, every account's prints."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from lezerprintd.analytics import MAX_DAYS, RANGES, Analytics, GroupBy, Period, Stretch, Tally
from lezerprintd.api.envelope import ok
from lezerprintd.api.spec import Answer, Endpoint, Field, Kind, query
from lezerprintd.errors import UserError, field_error

if TYPE_CHECKING:
    from lezerprintd.app import Appliance

RANGE: Final = Field(
    "range",
    Kind.STRING,
    "The last 7 or 30 or 90 days or the last year (365 days), today included",
    choices=tuple(RANGES),
    default="30d",
)
# A calendar day, or an ISO 8601 moment (a browser's toISOString()), which counts as the local
# day it falls on.
_DAY_PATTERN: Final = r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?"
STATISTICS_FIELDS: Final = (
    Field("from", Kind.STRING, "First day (YYYY-MM-DD); default: 29 days before `to`",
          pattern=_DAY_PATTERN, max_length=40),
    Field("to", Kind.STRING, "Last day, included (YYYY-MM-DD); default: today",
          pattern=_DAY_PATTERN, max_length=40),
    Field("groupBy", Kind.STRING, "One entry per day, ISO week (Monday to Sunday) or month",
          choices=tuple(group.value for group in GroupBy), default=GroupBy.DAY.value),
)  # fmt: skip
EARLIEST: Final = dt.date(1970, 1, 1)
LATEST: Final = dt.date(2999, 12, 31)

_COUNT: Final = {"type": "integer", "minimum": 0}
_SECONDS: Final = {"type": "integer", "minimum": 0, "description": "seconds"}
_GRAMS: Final = {"type": ["number", "null"], "description": "grams; null when not known"}
_RATE: Final = {
    "type": ["number", "null"],
    "minimum": 0,
    "maximum": 100,
    "description": "percent of the finished prints that completed; null without prints",
}
_DAY: Final = {"type": "string", "format": "date"}


def _object(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


def _list(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


DASHBOARD: Final = _object(
    **{"from": _DAY, "to": _DAY},
    totalPrints=_COUNT,
    completed=_COUNT,
    failed=_COUNT,
    cancelled=_COUNT,
    successRate=_RATE,
    totalTime=_SECONDS,
    averagePrintTime={"type": ["integer", "null"], "minimum": 0},
    materialUsed=_GRAMS,
    materialUnknown=_COUNT,
    estimateAccuracy=_object(
        jobs=_COUNT,
        estimatedTime=_SECONDS,
        actualTime=_SECONDS,
        meanRatio={"type": ["number", "null"], "minimum": 0},
    ),
    trends=_list(_object(date=_DAY, prints=_COUNT, successRate=_RATE, time=_SECONDS)),
)
MATERIALS: Final = _object(
    **{"from": _DAY, "to": _DAY},
    materials=_list(
        _object(
            type={"type": ["string", "null"]},
            usage=_GRAMS,
            length={"type": ["number", "null"], "description": "millimetres"},
            cost={"type": ["number", "null"]},
            prints=_COUNT,
            usageUnknown=_COUNT,
        )
    ),
)
FAILURES: Final = _object(
    **{"from": _DAY, "to": _DAY},
    total=_COUNT,
    failures=_list(
        _object(
            reason={"type": "string"},
            count=_COUNT,
            percentage={"type": "number", "minimum": 0, "maximum": 100},
        )
    ),
)
STATISTICS: Final = _object(
    **{"from": _DAY, "to": _DAY},
    groupBy={"type": "string", "enum": [group.value for group in GroupBy]},
    statistics=_list(
        _object(
            period={"type": "string"},
            start=_DAY,
            end=_DAY,
            prints=_COUNT,
            completed=_COUNT,
            failed=_COUNT,
            cancelled=_COUNT,
            successRate=_RATE,
            time=_SECONDS,
            materialUsed=_GRAMS,
        )
    ),
)


def _period(request: web.Request) -> Period:
    return Period.last_days(RANGES[query(request, (RANGE,))["range"]])


def _span(period: Period) -> dict[str, str]:
    return {"from": period.first.isoformat(), "to": period.last.isoformat()}


def _day(name: str, text: str) -> dt.date:
    """A day from `from` or `to`; 400 naming the field when it is no real day."""
    try:
        if "T" not in text:
            day = dt.date.fromisoformat(text)
        else:
            moment = dt.datetime.fromisoformat(text)
            # With an offset it is a moment anywhere: the appliance's own day is meant.
            day = (moment.astimezone() if moment.tzinfo else moment).date()
    except (ValueError, OverflowError):
        raise _invalid(name, "is not a real date (YYYY-MM-DD)", "date") from None
    if not EARLIEST <= day <= LATEST:
        raise _invalid(name, f"must be between {EARLIEST} and {LATEST}", "range")
    return day


def _invalid(name: str, message: str, code: str) -> UserError:
    return field_error(name, message, code, f"invalid request: {name}")  # as the field checks say


def _statistics_period(values: dict[str, Any]) -> Period:
    given_first, given_last = values["from"], values["to"]
    last = dt.date.today() if given_last is None else _day("to", given_last)
    first = last - dt.timedelta(days=29) if given_first is None else _day("from", given_first)
    if first > last:
        raise _invalid("from", "must not be after `to`", "range")
    period = Period(first, last)
    if period.days > MAX_DAYS:
        raise _invalid("from", f"the range may span at most {MAX_DAYS} days", "range")
    return period


def _stretch(stretch: Stretch) -> dict[str, Any]:
    tally = stretch.tally
    return {
        "period": stretch.label,
        "start": stretch.first.isoformat(),
        "end": stretch.last.isoformat(),
        **_counts(tally),
        "successRate": tally.success_rate,
        "time": tally.time,
        "materialUsed": tally.material_used,
    }


def _counts(tally: Tally) -> dict[str, int]:
    return {
        "prints": tally.prints,
        "completed": tally.completed,
        "failed": tally.failed,
        "cancelled": tally.cancelled,
    }


def endpoints(appliance: Appliance) -> list[Endpoint]:
    def analytics() -> Analytics:
        return Analytics(appliance.store)

    async def handle_dashboard(request: web.Request) -> web.Response:
        board = await analytics().dashboard(_period(request))
        tally, accuracy = board.tally, board.accuracy
        counts = _counts(tally)
        return ok(
            {
                **_span(board.period),
                "totalPrints": counts.pop("prints"),
                **counts,
                "successRate": tally.success_rate,
                "totalTime": tally.time,
                "averagePrintTime": board.average_print_time,
                "materialUsed": tally.material_used,
                "materialUnknown": board.material_unknown,
                "estimateAccuracy": {
                    "jobs": accuracy.jobs,
                    "estimatedTime": accuracy.estimated_time,
                    "actualTime": accuracy.actual_time,
                    "meanRatio": accuracy.mean_ratio,
                },
                "trends": [
                    {
                        "date": day.label,
                        "prints": day.tally.prints,
                        "successRate": day.tally.success_rate,
                        "time": day.tally.time,
                    }
                    for day in board.days
                ],
            }
        )

    async def handle_materials(request: web.Request) -> web.Response:
        period = _period(request)
        used = await analytics().materials(period)
        return ok(
            {
                **_span(period),
                "materials": [
                    {
                        "type": use.material,
                        "usage": use.grams,
                        "length": use.length,
                        "cost": use.cost,
                        "prints": use.prints,
                        "usageUnknown": use.grams_unknown,
                    }
                    for use in used
                ],
            }
        )

    async def handle_failures(request: web.Request) -> web.Response:
        period = _period(request)
        reasons = await analytics().failures(period)
        return ok(
            {
                **_span(period),
                "total": sum(reason.count for reason in reasons),
                "failures": [
                    {"reason": r.reason, "count": r.count, "percentage": r.percentage}
                    for r in reasons
                ],
            }
        )

    async def handle_statistics(request: web.Request) -> web.Response:
        values = query(request, STATISTICS_FIELDS)
        period = _statistics_period(values)
        group_by = GroupBy(values["groupBy"])
        stretches = await analytics().history(period, group_by)
        return ok(
            {
                **_span(period),
                "groupBy": group_by.value,
                "statistics": [_stretch(stretch) for stretch in stretches],
            }
        )

    return [
        Endpoint("GET", "/api/analytics/dashboard", handle_dashboard,
                 "Prints, success rate, time, filament and a daily trend", "analytics",
                 query=(RANGE,), answers=(Answer(200, "The figures", DASHBOARD),)),
        Endpoint("GET", "/api/analytics/materials", handle_materials,
                 "Filament used, by material", "analytics",
                 query=(RANGE,), answers=(Answer(200, "One entry per material", MATERIALS),)),
        Endpoint("GET", "/api/analytics/failures", handle_failures,
                 "Why prints did not complete", "analytics",
                 query=(RANGE,), answers=(Answer(200, "One entry per reason", FAILURES),)),
        Endpoint("GET", "/api/analytics/statistics", handle_statistics,
                 "Prints per day, week or month between two days", "analytics",
                 query=STATISTICS_FIELDS,
                 answers=(Answer(200, "One entry per period", STATISTICS),
                          Answer(400, "A bad date, `from` after `to`, or over five years"))),
    ]  # fmt: skip
