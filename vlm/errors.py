"""The one exception type whose message is meant for the user."""


class VlmError(Exception):
    """A problem the user can fix (bad input, missing file, ...).

    The CLI prints its message on one line of stderr and exits with code 2; no traceback.
    """
