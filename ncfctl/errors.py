"""The one error type for expected failures.

Services raise :class:`NcfError` for anything a user can fix (bad input, a missing artifact, a
missing credential). The CLI turns it into one red line and exit code 2; anything else is a bug
and keeps its traceback.
"""


class NcfError(Exception):
    """An expected failure with a one-line message that names the file/field/value at fault."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
