"""In-process publish/subscribe of typed events between the rooms.

Rule: `publish` calls every subscriber at once, on the event loop, and keeps nothing. A
subscriber that needs to do slow work (a websocket send, a database write) hands the event
to its own bounded queue; a subscriber that raises is logged and the others still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, TypeVar

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BusEvent:
    """Base of every event; `name` is the websocket event name (`printer:status`, ...)."""

    name: ClassVar[str] = ""

    def payload(self) -> dict[str, Any]:
        """The event's data as JSON-ready values."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PrinterStatusChanged(BusEvent):
    name: ClassVar[str] = "printer:status"
    state: str
    error: str | None
    port: str | None
    baud: int | None
    firmware: str | None


@dataclass(frozen=True, slots=True)
class TemperaturesReported(BusEvent):
    name: ClassVar[str] = "printer:temperature"
    hotend_temp: float | None
    hotend_target: float | None
    bed_temp: float | None
    bed_target: float | None
    chamber_temp: float | None


@dataclass(frozen=True, slots=True)
class PrinterAlert(BusEvent):
    """Something a person should see now: a halt, a firmware error, a runout prompt."""

    name: ClassVar[str] = "printer:error"
    type: str
    message: str
    severity: str  # INFO, WARNING, ERROR, CRITICAL


@dataclass(frozen=True, slots=True)
class JobStatusChanged(BusEvent):
    name: ClassVar[str] = "job:status"
    job_id: str
    status: str
    file_name: str
    error_message: str | None


@dataclass(frozen=True, slots=True)
class JobProgressed(BusEvent):
    name: ClassVar[str] = "job:progress"
    job_id: str
    progress: float  # percent of the file's bytes sent
    bytes_done: int
    bytes_total: int
    lines_done: int
    elapsed: float  # seconds printing, pauses excluded
    layer: int  # layers begun so far, by the slicer's layer comments (0: none yet)


@dataclass(frozen=True, slots=True)
class JobLayerChanged(BusEvent):
    """The print began a new layer (the slicer's layer comment was passed)."""

    name: ClassVar[str] = "job:layer"
    job_id: str
    layer: int


@dataclass(frozen=True, slots=True)
class JobFinished(BusEvent):
    """A job reached COMPLETED, FAILED or CANCELLED."""

    name: ClassVar[str] = "job:completed"
    job_id: str
    status: str
    file_name: str
    error_message: str | None
    actual_time: int | None


@dataclass(frozen=True, slots=True)
class FileAnalyzed(BusEvent):
    """A model's analysis ended: DONE (figures and picture stored) or FAILED (`error`)."""

    name: ClassVar[str] = "file:analyzed"
    file_id: str
    owner_id: str | None
    status: str
    error: str | None


@dataclass(frozen=True, slots=True)
class SessionsRevoked(BusEvent):
    """An account's sessions ended (logout everywhere, deactivation, password change): open
    websockets of that account must close. `session_id` None means every session."""

    name: ClassVar[str] = "auth:revoked"
    user_id: str
    session_id: str | None


Event = TypeVar("Event", bound=BusEvent)
Handler = Callable[[Any], None]


class Bus:
    """Subscribers by event type; `subscribe(BusEvent, ...)` receives everything."""

    def __init__(self) -> None:
        self._handlers: dict[type[BusEvent], list[Handler]] = {}

    def subscribe(self, kind: type[Event], handler: Callable[[Event], None]) -> Callable[[], None]:
        """Call `handler` for every published `kind`; returns the function that unsubscribes."""
        handlers = self._handlers.setdefault(kind, [])
        handlers.append(handler)
        return lambda: handlers.remove(handler)

    def publish(self, event: BusEvent) -> None:
        for kind in (type(event), BusEvent):
            for handler in tuple(self._handlers.get(kind, ())):
                try:
                    handler(event)
                except Exception:
                    log.exception("a subscriber to %s failed", event.name)
