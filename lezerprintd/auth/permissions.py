"""Who may do what: roles, permissions, and the one table of every route and socket message.

Rule: access is decided here and nowhere else. Every HTTP route and every websocket message
has exactly one entry in `ACCESS`; a route without one is refused (and a test fails).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal


class Role(enum.Enum):
    ADMIN = "ADMIN"
    OPERATOR = "OPERATOR"
    VIEWER = "VIEWER"


class Permission(enum.Enum):
    USER_READ = "user:read"
    USER_WRITE = "user:write"
    USER_DELETE = "user:delete"
    PRINTER_READ = "printer:read"
    PRINTER_CONTROL = "printer:control"
    PRINTER_CONFIGURE = "printer:configure"
    FILE_READ = "file:read"
    FILE_UPLOAD = "file:upload"
    FILE_DELETE = "file:delete"
    JOB_READ = "job:read"
    JOB_CREATE = "job:create"
    JOB_CONTROL = "job:control"
    SYSTEM_CONFIGURE = "system:configure"
    SYSTEM_MONITOR = "system:monitor"
    ANALYTICS_VIEW = "analytics:view"


class Open(enum.Enum):
    """Requirements that are not a permission."""

    PUBLIC = "public"  # anyone, signed in or not
    SIGNED_IN = "signed-in"  # any active account, whatever its role


Requirement = Permission | Open

P = Permission
# The seed's matrix (SECURITY.md): ADMIN holds all; OPERATOR runs prints; VIEWER watches.
ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPERATOR: frozenset(
        {
            P.PRINTER_READ,
            P.PRINTER_CONTROL,
            P.FILE_READ,
            P.FILE_UPLOAD,
            P.JOB_READ,
            P.JOB_CREATE,
            P.JOB_CONTROL,
            P.ANALYTICS_VIEW,
        }
    ),
    Role.VIEWER: frozenset({P.PRINTER_READ, P.FILE_READ, P.JOB_READ, P.ANALYTICS_VIEW}),
}

# Every route ("METHOD /path" as registered) and every client message ("WS event").
ACCESS: Final[dict[str, Requirement]] = {
    # the daemon
    "GET /api/health": Open.PUBLIC,
    "GET /api/status": Open.PUBLIC,
    "GET /api/openapi.json": Open.PUBLIC,
    "GET /api/system/events": P.SYSTEM_MONITOR,
    # accounts: signing in and out
    "GET /api/auth/setup": Open.PUBLIC,
    "POST /api/auth/setup": Open.PUBLIC,  # needs the one-time setup code
    "POST /api/auth/login": Open.PUBLIC,
    "POST /api/auth/refresh": Open.PUBLIC,  # needs a refresh token
    "POST /api/auth/register": Open.PUBLIC,  # only while an admin has enabled it
    "GET /api/auth/registration": Open.PUBLIC,
    "PUT /api/auth/registration": P.SYSTEM_CONFIGURE,
    "POST /api/auth/logout": Open.SIGNED_IN,
    "GET /api/auth/profile": Open.SIGNED_IN,
    "GET /api/auth/me": Open.SIGNED_IN,
    "PUT /api/auth/password": Open.SIGNED_IN,
    "GET /api/auth/api-keys": Open.SIGNED_IN,
    "POST /api/auth/api-keys": Open.SIGNED_IN,
    "DELETE /api/auth/api-keys/{key_id}": Open.SIGNED_IN,
    # accounts: administration
    "GET /api/users": P.USER_READ,
    "POST /api/users": P.USER_WRITE,
    "GET /api/users/{user_id}": P.USER_READ,
    "PATCH /api/users/{user_id}": P.USER_WRITE,
    "POST /api/users/{user_id}/password": P.USER_WRITE,
    # the printer
    "GET /api/printer/status": P.PRINTER_READ,
    "POST /api/printer/command": P.PRINTER_CONTROL,
    "POST /api/printer/home": P.PRINTER_CONTROL,
    "POST /api/printer/move": P.PRINTER_CONTROL,
    "POST /api/printer/temperature": P.PRINTER_CONTROL,
    "POST /api/printer/emergency-stop": P.PRINTER_CONTROL,
    "POST /api/printer/connect": P.PRINTER_CONTROL,
    "POST /api/printer/disconnect": P.PRINTER_CONTROL,
    "POST /api/printer/pause": P.JOB_CONTROL,
    "POST /api/printer/resume": P.JOB_CONTROL,
    "POST /api/printer/cancel": P.JOB_CONTROL,
    "GET /api/printer/profile": P.PRINTER_READ,
    "PATCH /api/printer/profile": P.PRINTER_CONFIGURE,
    "DELETE /api/printer/profile": P.PRINTER_CONFIGURE,
    "GET /api/gpio": P.SYSTEM_CONFIGURE,
    "PATCH /api/gpio": P.SYSTEM_CONFIGURE,
    "DELETE /api/gpio": P.SYSTEM_CONFIGURE,
    "GET /api/presets": P.PRINTER_READ,
    "POST /api/presets": P.SYSTEM_CONFIGURE,
    "PATCH /api/presets/{preset_id}": P.SYSTEM_CONFIGURE,
    "DELETE /api/presets/{preset_id}": P.SYSTEM_CONFIGURE,
    # terminal macros: operators keep the macros they run the printer with
    "GET /api/macros": P.PRINTER_READ,
    "POST /api/macros": P.PRINTER_CONTROL,
    "PATCH /api/macros/{macro_id}": P.PRINTER_CONTROL,
    "DELETE /api/macros/{macro_id}": P.PRINTER_CONTROL,
    "POST /api/macros/{macro_id}/run": P.PRINTER_CONTROL,
    # the file library
    "GET /api/files": P.FILE_READ,
    "POST /api/files": P.FILE_UPLOAD,
    "POST /api/files/upload": P.FILE_UPLOAD,
    "GET /api/files/folders": P.FILE_READ,
    "GET /api/files/{file_id}": P.FILE_READ,
    "GET /api/files/{file_id}/download": P.FILE_READ,
    "GET /api/files/{file_id}/thumbnail": P.FILE_READ,
    # the camera: watching is reading the printer; changing it is configuring the system
    "GET /api/camera/stream": P.PRINTER_READ,
    "GET /api/camera/snapshot": P.PRINTER_READ,
    "GET /api/camera/settings": P.PRINTER_READ,
    "POST /api/camera/settings": P.SYSTEM_CONFIGURE,
    "GET /api/jobs/{job_id}/timelapse": P.JOB_READ,
    "GET /api/jobs/{job_id}/timelapse/download": P.JOB_READ,
    "GET /api/timelapses": P.JOB_READ,
    "PATCH /api/files/{file_id}": P.FILE_UPLOAD,  # and only one's own files, unless ADMIN
    "DELETE /api/files/{file_id}": P.FILE_DELETE,
    "POST /api/files/{file_id}/print": P.JOB_CREATE,
    # print jobs
    "GET /api/jobs": P.JOB_READ,
    "GET /api/jobs/current": P.JOB_READ,
    "POST /api/jobs/start": P.JOB_CREATE,
    "GET /api/jobs/{job_id}": P.JOB_READ,
    "POST /api/jobs/{job_id}/pause": P.JOB_CONTROL,
    "POST /api/jobs/{job_id}/resume": P.JOB_CONTROL,
    "POST /api/jobs/{job_id}/cancel": P.JOB_CONTROL,
    # the history in figures
    "GET /api/analytics/dashboard": P.ANALYTICS_VIEW,
    "GET /api/analytics/materials": P.ANALYTICS_VIEW,
    "GET /api/analytics/failures": P.ANALYTICS_VIEW,
    "GET /api/analytics/statistics": P.ANALYTICS_VIEW,
    # the websocket: connecting, then each message a client may send
    "GET /ws": Open.SIGNED_IN,
    "WS subscribe": Open.SIGNED_IN,
    "WS unsubscribe": Open.SIGNED_IN,
    "WS printer:command": P.PRINTER_CONTROL,
    "WS control:command": P.PRINTER_CONTROL,
    "WS control:emergency": P.PRINTER_CONTROL,
    "WS control:pause": P.JOB_CONTROL,
    "WS control:resume": P.JOB_CONTROL,
    "WS control:stop": P.JOB_CONTROL,
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: an active account, and how it proved it."""

    user_id: str
    username: str
    role: Role
    session_id: str | None  # the signed-in session; None for an API key
    method: Literal["bearer", "cookie", "api_key"]


def allows(role: Role, requirement: Requirement) -> bool:
    """Whether an active account with `role` meets `requirement`."""
    if isinstance(requirement, Open):
        return True
    return requirement in ROLE_PERMISSIONS[role]


def permissions_of(role: Role) -> list[str]:
    """The role's permissions as the API shows them, sorted."""
    return sorted(permission.value for permission in ROLE_PERMISSIONS[role])
