"""`python -m prngd` and the `prngd` command."""

import sys

from prngd import startsignals


def main() -> int:
    # First of all, before the command line's imports: a signal during the
    # start must stop it quietly, never as a traceback (prngd.startsignals).
    startsignals.defer()
    from prngd.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
