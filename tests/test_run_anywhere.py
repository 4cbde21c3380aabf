"""`python3 -m prngd` from the directory that holds a checkout named prngd.

There Python finds the checkout itself first on sys.path (the working directory)
and takes it for a namespace package `prngd`; with the package installed editable
(the README's test command), the real package is reached only through the finder
setuptools places after the path. These tests build that situation with a finder
of the same kind pointing at this worktree, and run the tools from there.
"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT
from prngd import __version__

# What setuptools' editable install puts on sys.meta_path, after the path finder:
# `prngd` and its modules mapped to the package directory given as argv[1].
RUN_AS_EDITABLE = """
import runpy, sys
from importlib.machinery import PathFinder
from importlib.util import spec_from_file_location
package = sys.argv.pop(1)
class Editable:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "prngd":
            return spec_from_file_location(name, package + "/__init__.py", submodule_search_locations=[package])
        if name.startswith("prngd.") and name.count(".") == 1:
            return PathFinder.find_spec(name, [package])
        return None
sys.meta_path.insert(sys.meta_path.index(PathFinder) + 1, Editable)
runpy._run_module_as_main("prngd")
"""


def run_beside_checkout(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """`python3 -m prngd ARGS` run in a directory whose `prngd` is this checkout."""
    (tmp_path / "prngd").symlink_to(ROOT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the finder reaches the package
    return subprocess.run([sys.executable, "-c", RUN_AS_EDITABLE, str(ROOT / "prngd"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def test_python_m_prngd_beside_the_checkout_runs(tmp_path):
    out = run_beside_checkout(tmp_path, "--version")
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 0 and __version__ in out.stdout + out.stderr


def test_a_tool_beside_the_checkout_talks_to_the_daemon(tmp_path, start_daemon):
    work = tmp_path / "home"
    work.mkdir()
    d = start_daemon()
    out = run_beside_checkout(work, "get", "16", "--hex", d.socket)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 0, out.stderr
    assert len(bytes.fromhex(out.stdout.strip())) == 16
