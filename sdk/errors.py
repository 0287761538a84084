"""The one exception type users see: it says what went wrong and how to fix it."""


class HeartSightError(Exception):
    """A problem with the user's input or environment. The CLI prints it as one line and exits 2."""
