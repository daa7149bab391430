"""How the command lines (``train``, ``predict``, ``export``) report a failure: one line that says what to do.

A reader who passes a wrong path should see ``error: ... not found: ...``, not a traceback. The messages are written
where the error is found (a missing dataset, a bad label, an unwritable folder); this module only prints them.
"""

import sys


def one_line(error: BaseException) -> str:
    """The message's first line; for an error re-raised from a data-loading worker (PyTorch wraps it with the
    worker's whole traceback), the original error's message instead."""
    message = str(error).strip()
    if "Original Traceback" in message:
        return message.splitlines()[-1].split(": ", 1)[-1]
    return message.splitlines()[0] if message else type(error).__name__


def report(error: BaseException) -> int:
    """Print ``error: <one line>`` to stderr; return the exit status 1."""
    print(f"error: {one_line(error)}", file=sys.stderr)
    return 1
