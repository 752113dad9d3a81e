"""The one exception type whose message is meant for the user, and a one-line summary of any other."""


class VlmError(Exception):
    """A problem the user can fix (bad input, missing file, ...).

    The CLI prints its message on one line of stderr and exits with code 2; no traceback. Line breaks that
    user input brings into the message (a YAML key, a file name) are kept visible as \\n, on that one line.
    """

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(str(message)), *args)


# Every character str.splitlines() breaks at, written as its escape (`\n`, `\x1e`, `\u2028`).
_BREAKS = {ord(c): c.encode("unicode_escape").decode() for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    """`text` with its line breaks (all that str.splitlines knows) escaped, so that it prints as one line."""
    return text.translate(_BREAKS)


def exception_summary(exc: BaseException) -> str:
    """`Type: first line of the message` (at most 200 characters, no final full stop), for a VlmError wrapping `exc`."""
    text = str(exc).strip().splitlines()
    first = text[0][:200].rstrip(".") if text else ""  # the caller closes the sentence
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
