"""The errors LezerPrint raises on purpose.

Everything raised deliberately derives from `LezerError`; anything else that escapes is a bug.
"""


class LezerError(Exception):
    """Base of every error raised on purpose."""


class ConfigError(LezerError):
    """A setting is unknown, has the wrong type or an impossible value; start-up stops."""


class UserError(LezerError):
    """A request that cannot be served as asked; becomes an HTTP 4xx answer."""

    def __init__(self, message: str, status: int = 400, code: str = "VALIDATION_ERROR") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class PrinterError(LezerError):
    """The printer link failed or refused an operation."""
