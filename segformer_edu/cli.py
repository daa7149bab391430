"""How the command lines (``train``, ``predict``, ``export``) meet a user: one line for a mistake,
honest exit codes.

A reader who passes a wrong path should see ``error: ... not found: ...``, not a traceback. The
messages are written where the error is found (a missing dataset, a bad label, an unwritable
folder); this module prints them, gives the three commands one argument parser (defaults in
``--help``, one line for a mistyped flag) and their exit codes:

    0    done
    1    a mistake in the input, said in one line before any work (or predict skipped some images)
    2    a mistyped command line (an unknown flag, a missing value)
    130  stopped by Ctrl-C (128 + SIGINT's number, as a shell reports it); 143 for SIGTERM
"""

import argparse
import difflib
import signal
import sys
from pathlib import Path

DONE, FAILED, USAGE = 0, 1, 2
INTERRUPTED = 128 + signal.SIGINT  # 130


def interrupted_status(signum: int = signal.SIGINT) -> int:
    """The exit status of a process stopped by signal ``signum``: 130 for Ctrl-C, 143 for
    SIGTERM."""
    return 128 + int(signum)


def one_line(error: BaseException) -> str:
    """The message's first line, then its notes (``add_note``: where the last checkpoint is); for an
    error re-raised from a data-loading worker (PyTorch wraps it with the worker's whole traceback),
    the original error's message instead."""
    message = str(error).strip()
    if "Original Traceback" in message:
        message = message.splitlines()[-1].split(": ", 1)[-1]
    message = message.splitlines()[0] if message else type(error).__name__
    return "; ".join([message, *getattr(error, "__notes__", [])])


def report(error: BaseException) -> int:
    """Print ``error: <one line>`` to stderr; return the exit status 1."""
    print(f"error: {one_line(error)}", file=sys.stderr)
    return FAILED


class HelpWithDefaults(argparse.HelpFormatter):
    """``--help`` shows each flag's default (tuples as the values one types: ``512 512``)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default is argparse.SUPPRESS or action.required
                or "default" in text):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (tuple, list)) else default
        return f"{text} (default: {shown})"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with defaults in ``--help`` and a usage error in one line, naming the closest
    flag."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=HelpWithDefaults, **kwargs)

    def error(self, message: str):
        flags = [flag for flag in self._option_string_actions if flag.startswith("--")]
        typed = [word.split("=")[0] for word in message.split() if word.startswith("--")]
        close = [match for word in typed for match in difflib.get_close_matches(word, flags, n=1)]
        hint = f" (did you mean {', '.join(close)}?)" if close and "unrecognized" in message else ""
        self.exit(USAGE, f"error: {message}{hint}; see {self.prog} --help\n")


class DownloadError(ConnectionError):
    """A file that could not be downloaded (offline, a server that stopped): in a notebook, one line
    rather than a traceback through urllib (IPython shows what ``_render_traceback_`` returns)."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


def parse_size(text: str) -> tuple[int, int]:
    """``"360x480"`` -> (360, 480): a size on a command line, height first (an argparse type)."""
    height, width = text.lower().split("x")
    return int(height), int(width)


def try_writing(folder: Path) -> None:
    """Create ``folder`` and write a file there (removed at once): a place a command cannot write to
    fails now (OSError), not after its work."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / ".write_test"
    probe.write_bytes(b"")
    probe.unlink()
