"""`python -m prngd` and the `prngd` command."""

import gc
import sys

from prngd import startsignals


def main() -> int:
    # First of all, before the command line's imports: a signal during the
    # start must stop it quietly, never as a traceback (prngd.startsignals).
    startsignals.defer()
    # What a start builds is not garbage: the collector would only walk it
    # (a tenth of the imports' time).  The daemon turns it back on once
    # serving, after freezing what the start built (prngd.server); a tool at once.
    gc.disable()
    from prngd.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
