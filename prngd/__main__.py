"""`python3 -m prngd` and the `prngd` command: the command line."""

import gc
import sys


def _take_the_package_back() -> None:
    """Make `prngd` this package when Python took a checkout's directory for it.

    `python3 -m prngd` puts the working directory first on sys.path. Run from the
    directory holding a checkout named prngd, with the package installed editable (the
    README's test command: setuptools finds it through a finder placed after the path),
    Python imports that checkout as a namespace package `prngd` and finds only the
    submodules through the finder, so `from prngd import __version__` failed with a
    traceback. This module was found through the finder, so its directory is the package.
    """
    package = sys.modules.get("prngd")
    if package is None or getattr(package, "__file__", None) is not None:
        return
    import importlib.util
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("prngd", os.path.join(here, "__init__.py"),
                                                  submodule_search_locations=[here])
    real = importlib.util.module_from_spec(spec)
    sys.modules["prngd"] = real
    spec.loader.exec_module(real)


_take_the_package_back()

from prngd import startsignals  # noqa: E402  (after the package is the real one)


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
