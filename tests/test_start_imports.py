"""What the daemon imports before its first byte: what serving needs, nothing more (issue 22).

Pinned by module names, not by timing: each module here was once imported on
the way to the first byte and is now imported where it is used.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT

# The real start (`python -m prngd -f -n SOCK`), stopped at its last step before
# serving: the pool seeded, the connections about to be accepted.
UP_TO_SERVING = """
import json, os, runpy, sys
import trio

real_run = trio.run

def run(main, *args, **kwargs):
    daemon = main.__self__  # cli.daemon_main runs trio.run(daemon.run)
    seed = daemon.seed_before_serving

    def seed_then_report():
        seed()
        print(json.dumps(sorted(sys.modules)), flush=True)
        os._exit(0)

    daemon.seed_before_serving = seed_then_report
    return real_run(main, *args, **kwargs)

trio.run = run
sys.argv = ["prngd", *sys.argv[1:]]
runpy.run_module("prngd", run_name="__main__", alter_sys=True)
"""

# Each with who needs it, and when.
LATER = {
    "configparser": "an INI file",
    "shlex": "a command file or [commands]",
    "prngd.tools": "the client tools",
    "prngd.client": "the client tools",
    "grp": "the -u message about an unreadable file",
    "secrets": "nothing (os.urandom, hmac.compare_digest)",
    "mmap": "a vmclock device",
    "prngd.tasks": "what runs beside the connections, after the first turn",
    "psutil": "prngd.tasks' statistics",
    "prngd.admin": "prngd.tasks' admin socket",
    "prngd.kill": "-k",
    "logging.handlers": "syslog",
}


def modules_before_serving(tmp_path, *args: str) -> set[str]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run([sys.executable, "-c", UP_TO_SERVING, "-f", "-n", *args, str(tmp_path / "egd.sock")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def test_the_daemon_serves_without_importing_what_only_other_paths_need(tmp_path):
    modules = modules_before_serving(tmp_path)
    assert {"trio", "prngd.server", "prngd.pool", "prngd.driver"} <= modules  # stopped where meant
    early = {name: why for name, why in LATER.items() if name in modules}
    assert not early, f"imported before the first byte, though only these need them: {early}"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@needs_root
def test_a_reload_as_the_user_may_need_a_parser_the_start_did_not(start_daemon, open_dir):
    """-u: SIGHUP parses the file as the user, who may not reach the Python installation
    (nobody cannot read root's here): what the new file needs was imported before the drop."""
    quiet = "[sources]\nsystem = no\njitter = no\nexternal_commands = no\nkernel_interval = 3600\n"
    cfg = open_dir / "prngd.conf"
    cfg.write_text(quiet)
    d = start_daemon("-u", "nobody", "-c", str(cfg), socket=str(open_dir / "egd.sock"))
    cfg.write_text(quiet + "[commands]\ntrue = 0.01 /bin/true --ignored\n")  # shlex splits this one
    d.signal(signal.SIGHUP)
    assert "configuration reloaded" in d.wait_for_line("reload")
    assert d.stop() == 0
