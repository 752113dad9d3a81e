"""The one exception type whose message is meant for the user, and a one-line summary of any other."""


class VlmError(Exception):
    """A problem the user can fix (bad input, missing file, ...).

    The CLI prints its message on one line of stderr and exits with code 2; no traceback.
    """


def exception_summary(exc: BaseException) -> str:
    """`Type: first line of the message` (at most 200 characters, no final full stop), for a VlmError wrapping `exc`."""
    text = str(exc).strip().splitlines()
    first = text[0][:200].rstrip(".") if text else ""  # the caller closes the sentence
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
