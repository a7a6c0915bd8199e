"""Known errors: things that go wrong in the world, told to the user in one sentence.

Anything else that escapes is a bug: it is logged with its traceback and offered for a report.
"""

from __future__ import annotations


class KnownError(Exception):
    """An error whose message is one sentence that says what is wrong and what to do."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInputError(KnownError):
    """The user's input (a file, an argument, a value) cannot be used as it is."""

    exit_code = 3


class NotFoundError(KnownError):
    """A dataset, job or other record named by the user does not exist."""

    exit_code = 3


class ConflictError(KnownError):
    """The action is refused because of the state something else is in."""

    exit_code = 3


class DatabaseTooNewError(KnownError):
    """The database was written by a newer version of the app."""
