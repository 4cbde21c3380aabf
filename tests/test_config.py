"""Settings from INI files, PRNGD command files and the command line."""

from pathlib import Path

import pytest

from prngd import cli, config
from prngd.config import Command, ConfigError, FileSource

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_loads_and_matches_the_defaults():
    # Every key in the example is spelled as the parser knows it, and its
    # value is the default: the file documents the defaults truthfully.
    s = config.load(str(ROOT / "prngd.conf.example"))
    defaults = config.Settings()
    for name in ("socket_mode", "max_connections", "request_timeout", "idle_timeout", "admin_mode", "generator",
                 "pool_bits", "reseed_bits", "reseed_interval", "seed_save_interval", "exchange_interval",
                 "system_interval", "command_interval", "command_timeout", "command_max_output",
                 "low_water_bits", "kernel_bytes", "jitter_alpha_exp", "external_commands"):
        assert getattr(s, name) == getattr(defaults, name), name
    assert s.resolved_seedfile() == config.default_seedfile()
    assert s.commands == [] and s.files == []


def test_every_settings_field_is_documented_in_the_example():
    text = (ROOT / "prngd.conf.example").read_text()
    internal = {"sockets", "commands", "files", "foreground", "upstream"}
    for field in config.Settings.__dataclass_fields__:
        if field not in internal:
            assert f"\n{field} =" in text, field
    upstream = text[text.index("\n[upstream]"):]
    for key in config._UPSTREAM_KEYS:  # a section of its own: its keys, commented out
        assert f"\n# {key} =" in upstream, key


def test_ini_values():
    v = config.parse_ini("""
[prngd]
sockets = /run/egd-pool tcp/localhost:708
socket_mode = 0600
trusted_uids = 0, 1000
[pool]
generator = hmac-drbg
[seed]
seedfile = none
[commands]
ps = 0.02 /bin/ps -efl
[files]
irq = 0.01 4096 /proc/interrupts
""")
    assert v["sockets"] == ["/run/egd-pool", "tcp/localhost:708"]
    assert v["socket_mode"] == 0o600
    assert v["trusted_uids"] == [0, 1000]
    assert v["generator"] == "hmac-drbg"
    assert v["seedfile"] == ""  # none: switched off
    assert v["commands"] == [Command(("/bin/ps", "-efl"), 0.02, "ps")]
    assert v["files"] == [FileSource("/proc/interrupts", 0.01, 4096, "irq")]


@pytest.mark.parametrize("text, message", [
    ("[nope]\n", "unknown section"),
    ("[prngd]\nbogus = 1\n", "unknown key"),
    ("[prngd]\nmax_connections = many\n", "max_connections"),
    ("[commands]\nps = fast /bin/ps\n", "not a number"),
    ("[commands]\nps = 0.1 ps\n", "full path"),
    ("[files]\nx = 1 /proc/x\n", "RATE MAX_BYTES"),
    ("not ini at all\n", "config"),
])
def test_bad_ini_is_a_config_error(text, message):
    with pytest.raises(ConfigError, match=message):
        config.parse_ini(text, "config")


def test_prngd_command_file_unchanged(tmp_path):
    f = tmp_path / "prngd.conf"
    f.write_text("""# PRNGD's own format
"ps -efl"       /bin/ps     0.02
"netstat -an"   undef       0.05   # not on this system
"vmstat 1 2"    /usr/bin/vmstat 0.01
""")
    s = config.load(str(f))
    assert s.commands == [Command(("/bin/ps", "-efl"), 0.02, "ps"), Command(("/usr/bin/vmstat", "1", "2"), 0.01, "vmstat")]


def test_prngd_command_file_errors_name_the_line(tmp_path):
    f = tmp_path / "prngd.conf"
    f.write_text('"ps" /bin/ps 0.1\n"broken /bin/x\n')
    with pytest.raises(ConfigError, match=":2:"):
        config.load(str(f))


def test_validation():
    with pytest.raises(ConfigError):
        config.validate(config.Settings(generator="md5"))
    with pytest.raises(ConfigError):
        config.validate(config.Settings(system_interval=0))
    with pytest.raises(ConfigError, match="hmac-drbg"):
        config.validate(config.Settings(prediction_resistance=True))
    config.validate(config.Settings(generator="hmac-drbg", prediction_resistance=True))


def test_command_line_overrides_the_file(tmp_path):
    f = tmp_path / "c.ini"
    f.write_text("[prngd]\nsockets = /a\nsocket_mode = 0600\n[seed]\nseedfile = /s\n")
    args = cli.parser().parse_args(["-c", str(f), "-m", "0644", "-n", "/b", "127.0.0.1:7"])
    s = cli.load_settings(args)
    assert s.sockets == ["/b", "127.0.0.1:7"]
    assert s.socket_mode == 0o644
    assert s.resolved_seedfile() is None
    s = cli.load_settings(cli.parser().parse_args(["-c", str(f)]))
    assert s.sockets == ["/a"] and s.socket_mode == 0o600 and s.resolved_seedfile() == "/s"


def test_default_paths(monkeypatch):
    monkeypatch.setattr(config.os, "geteuid", lambda: 0)
    assert config.default_socket() == "/var/run/egd-pool"
    assert config.default_seedfile() == "/var/lib/prngd/seed"
    monkeypatch.setattr(config.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    monkeypatch.setenv("XDG_STATE_HOME", "/home/u/.state")
    assert config.default_socket() == "/run/user/1000/egd-pool"
    assert config.default_seedfile() == "/home/u/.state/prngd/seed"
    assert config.admin_socket_for("/run/user/1000/egd-pool") == "/run/user/1000/egd-pool.admin"


def test_whole_numbers_take_leading_zeros_and_hex():
    parsed = config.parse_ini("[pool]\npool_bits = 0256\nreseed_bits = 0x100\n")
    assert parsed["pool_bits"] == 256 and parsed["reseed_bits"] == 256


# ---------------------------------------------------------------- issue 19: configparser's quirks, reworded

QUIET = "[sources]\nsystem = no\njitter = no\nexternal_commands = no\nkernel_interval = 3600\n"
# (id, the file's text, the one line it must give: "c.conf:LINE: what is wrong: what to do")
BAD_INI = [
    ("continuation", QUIET + "[prngd]\nsockets = ./a\n    max_connections = 5\n",
     "c.conf:8: indented line 'max_connections = 5' would continue sockets of the line above; "
     "prngd's values never span lines"),
    ("duplicate-section", QUIET + "[prngd]\nmax_connections = 4\n[sources]\nkernel_bytes = 32\n",
     "c.conf:8: [sources] appears twice: keep one [sources] and move its keys there"),
    ("duplicate-key", QUIET + "[prngd]\nmax_connections = 4\nmax_connections = 5\n",
     "c.conf:8: [prngd] max_connections is set twice: keep one of the two lines"),
    ("not-key-value", QUIET + "[prngd]\nmax_connections 4\n",
     "c.conf:7: 'max_connections 4' is not 'key = value': write it so, or start it with # to make it a comment"),
    ("broken-header", QUIET + "[prngd\nmax_connections = 4\n", "c.conf:6: '[prngd' is not 'key = value'"),
    ("no-section", "max_connections = 4\n" + QUIET,
     "c.conf:1: 'max_connections = 4' comes before any [section]: prngd's settings go under [prngd]"),
]


def _run_prngd(*args, cwd):
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "prngd", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("name, text, says", BAD_INI, ids=[r[0] for r in BAD_INI])
def test_ini_mistakes_stop_the_start_with_one_line(name, text, says, tmp_path):
    (tmp_path / "c.conf").write_text(text)
    r = _run_prngd("-f", "-n", "-c", "c.conf", "./s", cwd=tmp_path)
    lines = (r.stderr + r.stdout).strip().splitlines()
    assert r.returncode == 2, lines
    assert len(lines) == 1 and lines[0].startswith(f"prngd: {tmp_path}/{says}"), lines
    assert not (tmp_path / "s").exists()


def test_ini_mistakes_at_sighup_keep_the_old_settings(start_daemon, tmp_path):
    import json
    import signal

    from conftest import egd_read

    d = start_daemon(config=QUIET + "[prngd]\nmax_connections = 7\n")
    cfg = Path(d.args[d.args.index("-c") + 1])
    for name, text, says in BAD_INI:
        cfg.write_text(text)
        d.signal(signal.SIGHUP)
        # Each message is its own: this waits for this reload's line.
        line = d.wait_for_line(str(cfg) + says.removeprefix("c.conf"))
        assert "reload failed, keeping the old configuration" in line, line
    assert len([ln for ln in d.lines if "reload failed" in ln]) == len(BAD_INI)
    status = json.loads(_run_prngd("status", "--json", d.socket, cwd=tmp_path).stdout)
    assert status["connections"]["max"] == 7
    assert len(egd_read(d.socket, 8)) == 8
    assert "Traceback" not in d.log()


@pytest.mark.parametrize("make, same_fields, field", [
    (lambda: Command(("/bin/ps", "-efl"), 0.02, "ps"), lambda: Command(argv=("/bin/ps", "-efl"), rate=0.02, name="ps"),
     "argv"),
    (lambda: FileSource("/proc/interrupts", 0.01), lambda: FileSource("/proc/interrupts", 0.01, 4096, ""), "path"),
    (lambda: config.Upstream("/run/host"), lambda: config.Upstream("/run/host", 60.0, 32, 0.0), "socket"),
])
def test_sources_in_the_settings_are_values(make, same_fields, field):
    """Command, FileSource and Upstream: equal and hashed by their fields (defaults included), immutable."""
    a, b = make(), same_fields()
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Command(("/bin/true",), 0.1) and a != config.Upstream("/elsewhere")
    with pytest.raises(AttributeError):
        setattr(a, field, "/changed")
    with pytest.raises(AttributeError):
        delattr(a, field)
    assert a == b
    assert repr(a).startswith(f"{type(a).__name__}({field}=")


def test_resolve_paths_keeps_every_field_but_the_path(tmp_path):
    s = config.Settings(sockets=["./pool,pr"], files=[FileSource("irq", 0.5, 100, "irq")],
                        upstream=config.Upstream("./up", 9.0, 8, 1.0))
    r = config.resolve_paths(s, str(tmp_path))
    assert r.sockets == [f"{tmp_path}/pool,pr"]
    assert r.files == [FileSource(f"{tmp_path}/irq", 0.5, 100, "irq")]
    assert r.upstream == config.Upstream(f"{tmp_path}/up", 9.0, 8, 1.0)
