"""SIGINT and SIGTERM from the first instant of a start until the daemon's trio loop takes them.

Python's defaults would raise KeyboardInterrupt wherever the start happens to
be (a 40-line traceback from the middle of an import) or end the process on
SIGTERM without removing what it made.  `defer()`, the first thing the
`prngd` command does, turns both into a note: the start stops at its next
safe point, quietly and with status 0 -- before the daemon touches a file
(prngd.cli), or as soon as it holds a signal receiver of its own
(prngd.server), after which every signal waits for it.  SIGHUP and SIGUSR1
mean nothing before serving; until then they are ignored rather than ending
the process (a Python handler, not SIG_IGN, which commands would inherit).

The client tools `restore()` Python's defaults: Ctrl-C stops them at once.
Standard library only; imports nothing of prngd.
"""

from __future__ import annotations

import signal

_requested: int | None = None


def _note(signum: int, frame) -> None:
    global _requested
    if signum in (signal.SIGINT, signal.SIGTERM) and _requested is None:
        _requested = signum


def defer() -> None:
    """Note SIGINT and SIGTERM from now on (stop_requested()), ignore SIGHUP and SIGUSR1."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, _note)


def stop_requested() -> signal.Signals | None:
    """The first SIGINT or SIGTERM noted since defer(), if any."""
    return None if _requested is None else signal.Signals(_requested)


def restore() -> None:
    """Python's own handling again: SIGINT raises KeyboardInterrupt, the others their default action."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)
