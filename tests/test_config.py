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
