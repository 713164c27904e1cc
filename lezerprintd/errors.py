"""The errors LezerPrint raises on purpose.

Everything raised deliberately derives from `LezerError`; anything else that escapes is a bug.
"""


class LezerError(Exception):
    """Base of every error raised on purpose."""


class ConfigError(LezerError):
    """A setting is unknown, has the wrong type or an impossible value; start-up stops."""


class UserError(LezerError):
    """A request that cannot be served as asked; becomes an HTTP 4xx answer.

    `details` names what was wrong, for a client to show beside each field; `headers` go on
    the answer (Retry-After with RATE_LIMITED).
    """

    def __init__(
        self,
        message: str,
        status: int = 400,
        code: str = "VALIDATION_ERROR",
        details: object = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details
        self.headers = headers or {}


def problem(field: str, message: str, code: str) -> dict[str, str]:
    """One entry of a UserError's `details`: what is wrong with one field of the request."""
    return {"field": field, "message": message, "code": code}


def field_error(field: str, message: str, code: str, answer: str = "") -> UserError:
    """A 400 about one field: `message` goes beside it in a form, `answer` (by default
    "<field> <message>") is the error's own message."""
    return UserError(answer or f"{field} {message}", details=[problem(field, message, code)])


class PrinterError(LezerError):
    """The printer link failed or refused an operation.

    By default the printer could not do it: no printer answered, it halted or went away while
    a command waited (HTTP 409 PRINTER_ERROR: the printer's state, not a fault of the server);
    a refusal because of the printer's known state is 409 CONFLICT, and a command the printer
    must never get is 400.
    """

    def __init__(self, message: str, status: int = 409, code: str = "PRINTER_ERROR") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
