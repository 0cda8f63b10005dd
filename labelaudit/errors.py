"""The one error type users see: printed as a single ``Error: …`` line, exit code 2."""


class LabelAuditError(Exception):
    """A problem with the user's input or settings, explained in one line."""

    exit_code = 2
