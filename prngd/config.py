"""Settings: one object built from defaults, a configuration file and the command line.

The file may be prngd's own INI format (see prngd.conf.example) or PRNGD's
command file unchanged (`"cmd args" /full/path rate` a line), so an existing
/etc/prngd.conf keeps working.  Command-line flags override the file.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Command:
    """An external command whose output is stirred in, credited at `rate` bits per byte."""

    argv: tuple[str, ...]
    rate: float
    name: str = ""


@dataclass(frozen=True)
class FileSource:
    """A file or device read up to `max_bytes` a sample, credited at `rate` bits per byte."""

    path: str
    rate: float
    max_bytes: int = 4096
    name: str = ""


def _runtime_dir() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg)
    return Path(f"/tmp/prngd-{os.getuid()}")


def default_socket() -> str:
    """PRNGD's and OpenSSL's well-known path for root; a per-user path otherwise."""
    if os.geteuid() == 0:
        return "/var/run/egd-pool"
    return str(_runtime_dir() / "egd-pool")


def default_seedfile() -> str:
    if os.geteuid() == 0:
        return "/var/lib/prngd/seed"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "prngd" / "seed")


def admin_socket_for(socket_spec: str) -> str:
    """The admin socket sits beside the first Unix EGD socket, so tools can find it from that."""
    from prngd.egd import parse_address

    address = parse_address(socket_spec)
    if address.is_unix:
        return address.path + ".admin"
    return str(_runtime_dir() / "prngd.admin")


@dataclass
class Settings:
    # [prngd]: sockets and limits
    sockets: list[str] = field(default_factory=list)  # empty: default_socket()
    socket_mode: int = 0o666
    allow_remote: bool = False  # listen on non-loopback TCP addresses
    max_connections: int = 1024
    max_connections_per_uid: int = 0  # one uid's (one TCP address's) share; 0: a quarter of max_connections
    request_timeout: float = 10.0  # from a request's first byte to its last
    idle_timeout: float = 0.0  # 0: never (Postfix, libgcrypt keep connections for hours)
    trusted_uids: list[int] = field(default_factory=list)  # root is always trusted
    trust_tcp: bool = False  # credit 0x03 writes from TCP peers
    pidfile: str | None = None
    admin_socket: str | None = None  # None: admin_socket_for(first socket); "" disables
    admin_mode: int = 0o600
    log_level: str = "info"
    foreground: bool = False
    # [pool]
    generator: str = "chacha20"
    drbg_hash: str = "sha256"
    prediction_resistance: bool = False
    pool_bits: int = 4096
    reseed_bits: int = 256
    reseed_interval: float = 60.0
    # [seed]
    seedfile: str | None = None  # None: default_seedfile(); "" disables (-n)
    seed_save_interval: float = 600.0
    # [exchange]
    exchange_file: str | None = None
    exchange_interval: float = 60.0
    # [sources]
    kernel: bool = True
    kernel_bytes: int = 32
    kernel_interval: float = 60.0
    system: bool = True
    system_interval: float = 17.0
    jitter: bool = True
    jitter_interval: float = 60.0
    jitter_alpha_exp: int = 20  # SP 800-90B health-test false-positive rate alpha = 2^-this
    external_commands: bool = True  # run the [commands] (or the built-in set when none are listed)
    command_interval: float = 49.0
    command_timeout: float = 25.0
    command_max_output: int = 100_000
    file_interval: float = 60.0
    low_water_bits: int = 1024  # below this estimate, gather more often
    commands: list[Command] = field(default_factory=list)
    files: list[FileSource] = field(default_factory=list)

    def resolved_sockets(self) -> list[str]:
        return list(self.sockets) or [default_socket()]

    def resolved_seedfile(self) -> str | None:
        if self.seedfile == "":
            return None
        return self.seedfile or default_seedfile()

    def resolved_admin_socket(self) -> str | None:
        if self.admin_socket == "":
            return None
        return self.admin_socket or admin_socket_for(self.resolved_sockets()[0])

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------- parsing

_BOOL = {"1": True, "yes": True, "true": True, "on": True, "0": False, "no": False, "false": False, "off": False}

# key -> (section, converter)
_KEYS: dict[str, tuple[str, object]] = {}


def _conv_bool(v: str) -> bool:
    try:
        return _BOOL[v.strip().lower()]
    except KeyError:
        raise ValueError(f"not a boolean: {v!r}") from None


def _conv_mode(v: str) -> int:
    return int(v.strip(), 8)


def _conv_list(v: str) -> list[str]:
    return [p for p in re.split(r"[\s,]+", v.strip()) if p]


def _conv_uids(v: str) -> list[int]:
    import pwd

    uids = []
    for item in _conv_list(v):
        uids.append(int(item) if item.isdigit() else pwd.getpwnam(item).pw_uid)
    return uids


def _conv_opt_str(v: str) -> str | None:
    """Empty means the default (None); `none` means switched off ("")."""
    v = v.strip()
    if not v:
        return None
    return "" if v.lower() == "none" else v


_CONVERTERS = {bool: _conv_bool, int: lambda v: int(v.strip(), 0), float: lambda v: float(v.strip())}

_SECTIONS = {
    "prngd": ["sockets", "socket_mode", "allow_remote", "max_connections", "max_connections_per_uid", "request_timeout", "idle_timeout",
              "trusted_uids", "trust_tcp", "pidfile", "admin_socket", "admin_mode", "log_level"],
    "pool": ["generator", "drbg_hash", "prediction_resistance", "pool_bits", "reseed_bits", "reseed_interval"],
    "seed": ["seedfile", "seed_save_interval"],
    "exchange": ["exchange_file", "exchange_interval"],
    "sources": ["kernel", "kernel_bytes", "kernel_interval", "system", "system_interval", "jitter",
                "jitter_interval", "jitter_alpha_exp", "external_commands", "command_interval", "command_timeout",
                "command_max_output", "file_interval", "low_water_bits"],
}
_SPECIAL = {"sockets": _conv_list, "trusted_uids": _conv_uids, "socket_mode": _conv_mode,
            "admin_mode": _conv_mode, "pidfile": _conv_opt_str, "admin_socket": _conv_opt_str,
            "seedfile": _conv_opt_str, "exchange_file": _conv_opt_str}


def _field_converter(name: str):
    if name in _SPECIAL:
        return _SPECIAL[name]
    ftype = {f.name: f.type for f in dataclasses.fields(Settings)}[name]
    for py, conv in _CONVERTERS.items():
        if ftype == py.__name__:
            return conv
    return _conv_opt_str


def _parse_commands(section, where: str) -> list[Command]:
    out = []
    for name, value in section.items():
        parts = shlex.split(value)
        if len(parts) < 2:
            raise ConfigError(f"{where}: [commands] {name}: expected 'RATE /path/to/cmd [args]'")
        try:
            rate = float(parts[0])
        except ValueError:
            raise ConfigError(f"{where}: [commands] {name}: rate {parts[0]!r} is not a number") from None
        if not parts[1].startswith("/"):
            raise ConfigError(f"{where}: [commands] {name}: the command must be a full path")
        out.append(Command(tuple(parts[1:]), rate, name))
    return out


def _parse_files(section, where: str) -> list[FileSource]:
    out = []
    for name, value in section.items():
        parts = value.split()
        if len(parts) != 3:
            raise ConfigError(f"{where}: [files] {name}: expected 'RATE MAX_BYTES /path'")
        try:
            out.append(FileSource(parts[2], float(parts[0]), int(parts[1]), name))
        except ValueError as e:
            raise ConfigError(f"{where}: [files] {name}: {e}") from None
    return out


def parse_ini(text: str, where: str = "<config>") -> dict:
    """Parse prngd's INI format into a dict of Settings field values."""
    cp = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=("#", ";"),
                                   inline_comment_prefixes=None)
    cp.optionxform = str  # keep command names as written
    try:
        cp.read_string(text, source=where)
    except configparser.Error as e:
        raise ConfigError(f"{where}: {e}") from None
    values: dict = {}
    for sect in cp.sections():
        if sect == "commands":
            values["commands"] = _parse_commands(cp[sect], where)
            continue
        if sect == "files":
            values["files"] = _parse_files(cp[sect], where)
            continue
        if sect not in _SECTIONS:
            raise ConfigError(f"{where}: unknown section [{sect}]")
        for key, raw in cp[sect].items():
            if key not in _SECTIONS[sect]:
                raise ConfigError(f"{where}: unknown key {key!r} in [{sect}]")
            try:
                values[key] = _field_converter(key)(raw)
            except (ValueError, KeyError) as e:
                raise ConfigError(f"{where}: [{sect}] {key}: {e}") from None
    return values


_PRNGD_LINE = re.compile(r'^\s*"([^"]*)"\s+(\S+)\s+([0-9.eE+-]+)\s*(#.*)?$')


def parse_prngd_cmdfile(text: str, where: str = "<cmdfile>") -> list[Command]:
    """PRNGD's command file: `"cmd args" /full/path rate`; `#` comments; path `undef` skips.

    PRNGD documents the rate as bits per byte of output; we credit exactly that
    (its code credits eight times as much, which we do not copy).
    """
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _PRNGD_LINE.match(stripped)
        if not m:
            raise ConfigError(f"{where}:{lineno}: expected '\"cmd args\" /full/path rate'")
        cmdline, path, rate, _ = m.groups()
        if path == "undef":
            continue
        words = shlex.split(cmdline)
        if not words:
            raise ConfigError(f"{where}:{lineno}: empty command")
        out.append(Command((path, *words[1:]), float(rate), words[0]))
    return out


def looks_like_prngd_cmdfile(text: str) -> bool:
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#") or s.startswith(";"):
            continue
        return s.startswith('"')
    return False


def load(path: str | None, base: Settings | None = None) -> Settings:
    """Settings from `path` (INI or PRNGD command file) laid over `base` (or defaults)."""
    settings = base or Settings()
    if not path:
        return settings
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    if looks_like_prngd_cmdfile(text):
        values = {"commands": parse_prngd_cmdfile(text, path)}
    else:
        values = parse_ini(text, path)
    settings = settings.replace(**values)
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    if s.generator not in ("chacha20", "hmac-drbg"):
        raise ConfigError(f"generator must be chacha20 or hmac-drbg, not {s.generator!r}")
    if s.drbg_hash not in ("sha256", "sha512"):
        raise ConfigError(f"drbg_hash must be sha256 or sha512, not {s.drbg_hash!r}")
    if s.prediction_resistance and s.generator != "hmac-drbg":
        raise ConfigError("prediction_resistance needs generator = hmac-drbg")
    if s.max_connections < 1:
        raise ConfigError("max_connections must be at least 1")
    if s.max_connections_per_uid < 0:
        raise ConfigError("max_connections_per_uid must be 0 (a quarter of max_connections) or more")
    if s.pool_bits < 256:
        raise ConfigError("pool_bits must be at least 256")
    if s.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log_level must be debug, info, warning or error, not {s.log_level!r}")
    for name in ("system_interval", "command_interval", "file_interval", "kernel_interval", "jitter_interval",
                 "seed_save_interval", "exchange_interval", "reseed_interval"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name} must be positive")
