"""Settings: one object built from defaults, a configuration file and the command line.

The file may be prngd's own INI format (see prngd.conf.example) or PRNGD's
command file unchanged (`"cmd args" /full/path rate` a line), so an existing
/etc/prngd.conf keeps working.  Command-line flags override the file.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from prngd.value import Value

# configparser and shlex are imported where a file is parsed: a start with
# no configuration file (the usual one) does not wait for them.


def import_parsers() -> None:
    """Import both formats' parsers now: before the drop to -u USER, when SIGHUP will
    re-read the file as USER, who may not reach the Python installation."""
    import configparser  # noqa: F401
    import shlex  # noqa: F401


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


class Command(Value):
    """An external command whose output is stirred in, credited at `rate` bits per byte."""

    __slots__ = ("argv", "rate", "name")

    def __init__(self, argv: tuple[str, ...], rate: float, name: str = "") -> None:
        object.__setattr__(self, "argv", argv)
        object.__setattr__(self, "rate", rate)
        object.__setattr__(self, "name", name)


class FileSource(Value):
    """A file or device read up to `max_bytes` a sample, credited at `rate` bits per byte."""

    __slots__ = ("path", "rate", "max_bytes", "name")

    def __init__(self, path: str, rate: float, max_bytes: int = 4096, name: str = "") -> None:
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "rate", rate)
        object.__setattr__(self, "max_bytes", max_bytes)
        object.__setattr__(self, "name", name)


class Upstream(Value):
    """Another EGD server this one draws from: `nbytes` every `interval` seconds, credited
    `credit_bits_per_byte` (0: mixed in, never credited)."""

    __slots__ = ("socket", "interval", "nbytes", "credit_bits_per_byte")

    def __init__(self, socket: str, interval: float = 60.0, nbytes: int = 32,
                 credit_bits_per_byte: float = 0.0) -> None:
        object.__setattr__(self, "socket", socket)
        object.__setattr__(self, "interval", interval)
        object.__setattr__(self, "nbytes", nbytes)
        object.__setattr__(self, "credit_bits_per_byte", credit_bits_per_byte)


def _fallback_runtime_dir() -> Path | None:
    """/tmp/prngd-UID when $XDG_RUNTIME_DIR is unset (cron, su, a service), else None.

    Only a path: the daemon creates and checks it at start
    (privileges.ensure_private_dir); the client tools compute it too and must create nothing.
    """
    if os.environ.get("XDG_RUNTIME_DIR"):
        return None
    return Path(f"/tmp/prngd-{os.getuid()}")


def _runtime_dir() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg)
    return _fallback_runtime_dir()


def default_socket() -> str:
    """PRNGD's and OpenSSL's well-known path for root; a per-user path otherwise."""
    if os.geteuid() == 0:
        return "/var/run/egd-pool"
    return str(_runtime_dir() / "egd-pool")


SYSTEM_SEEDFILE = "/var/lib/prngd/seed"


def default_seedfile() -> str:
    if os.geteuid() == 0:
        return SYSTEM_SEEDFILE
    state = os.environ.get("XDG_STATE_HOME")
    if not state:
        try:
            state = str(Path.home() / ".local" / "state")
        except (RuntimeError, KeyError):
            # No $HOME and no passwd entry (a container's arbitrary uid): the system's
            # place, where such a container mounts its state (examples/kubernetes/).
            return SYSTEM_SEEDFILE
    return str(Path(state) / "prngd" / "seed")


def fallback_runtime_dir_in_use(settings: Settings) -> str | None:
    """The fallback runtime directory if a Unix socket the daemon will create lies in it."""
    from prngd.egd import parse_address

    fallback = _fallback_runtime_dir()
    if fallback is None:
        return None
    paths = [settings.resolved_admin_socket()]
    for spec in settings.resolved_sockets():
        try:
            paths.append(parse_address(spec).path)
        except ValueError:
            pass  # reported when the sockets are bound
    for p in paths:
        if p and Path(os.path.abspath(p)).is_relative_to(fallback):
            return str(fallback)
    return None


def pin_defaults(settings: Settings, resolved: Settings | None = None) -> Settings:
    """`settings` with the defaults that depend on the euid (sockets, seed file,
    admin socket) written out: as `resolved` has them, else as they resolve now.

    A daemon that drops privileges resolves them once, as root, and keeps
    them: after the drop (and at SIGHUP) they would name the new user's paths.
    """
    r = resolved or settings
    return settings.replace(
        sockets=settings.sockets or r.resolved_sockets(),
        seedfile=r.resolved_seedfile() or "" if settings.seedfile is None else settings.seedfile,
        admin_socket=r.resolved_admin_socket() or "" if settings.admin_socket is None else settings.admin_socket)


def default_log_file() -> str:
    """Where a detached daemon logs when there is no syslog: beside the default seed file."""
    return str(Path(default_seedfile()).parent / "prngd.log")


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
    max_connections_per_uid: int = 0  # one uid's (a remote TCP address's) share; 0: a quarter of max_connections
    request_timeout: float = 10.0  # from a request's first byte to its last
    idle_timeout: float = 0.0  # 0: never (Postfix, libgcrypt keep connections for hours)
    busy_poll: int = 50  # microseconds to spin for one client's next request (0: never; see prngd.driver)
    trusted_uids: list[int] = field(default_factory=list)  # root is always trusted
    trust_tcp: bool = False  # credit 0x03 writes from TCP peers known only by their address
    pidfile: str | None = None
    admin_socket: str | None = None  # None: admin_socket_for(first socket); "" disables
    admin_mode: int = 0o600
    log_level: str = "info"
    log_file: str | None = None  # None: syslog when detached and /dev/log exists, else default_log_file()
    foreground: bool = False
    history_interval: float = 60.0  # seconds between points of the /history ring (1440 points kept)
    user: str | None = None  # -u: switch to this user (name or uid) once the sockets are bound; root only
    # [pool]
    generator: str = "chacha20"
    drbg_hash: str = "sha256"
    prediction_resistance: bool = False
    pool_bits: int = 4096
    reseed_bits: int = 256
    reseed_interval: float = 60.0
    vmclock_device: str | None = None  # None: /dev/vmclock0 where it exists; "" (none): not watched
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
    # Below this estimate, gather more often and show LOW.  256 is what a ready
    # kernel credits at start (kernel_bytes 32), so a healthy daemon never starts LOW.
    low_water_bits: int = 256
    commands: list[Command] = field(default_factory=list)
    files: list[FileSource] = field(default_factory=list)
    # [upstream]
    upstream: Upstream | None = None

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


def _conv_sockets(v: str) -> list[str]:
    """Like a list, but a socket option (`pr`) belongs to the socket before it: `/run/a,pr, /run/b`."""
    from prngd.egd import SOCKET_OPTIONS

    out: list[str] = []
    for item in _conv_list(v):
        if item in SOCKET_OPTIONS and out:
            out[-1] += "," + item
        else:
            out.append(item)
    return out


def _conv_uids(v: str) -> list[int]:
    import pwd

    uids = []
    for item in _conv_list(v):
        try:
            uids.append(int(item) if item.isdigit() else pwd.getpwnam(item).pw_uid)
        except KeyError:
            raise KeyError(item) from None
    return uids


def _conv_opt_str(v: str) -> str | None:
    """Empty means the default (None); `none` means switched off ("")."""
    v = v.strip()
    if not v:
        return None
    return "" if v.lower() == "none" else v


def _conv_int(v: str) -> int:
    v = v.strip()
    try:
        return int(v, 0)  # 0x1000 as well as 4096
    except ValueError:
        return int(v, 10)  # 0256 is 256, as a person writing it means


_CONVERTERS = {bool: _conv_bool, int: _conv_int, float: lambda v: float(v.strip())}

_SECTIONS = {
    "prngd": ["sockets", "socket_mode", "allow_remote", "max_connections", "max_connections_per_uid",
              "request_timeout", "idle_timeout", "busy_poll", "trusted_uids", "trust_tcp", "pidfile", "admin_socket",
              "admin_mode", "log_level", "log_file", "history_interval", "user"],
    "pool": ["generator", "drbg_hash", "prediction_resistance", "pool_bits", "reseed_bits", "reseed_interval",
             "vmclock_device"],
    "seed": ["seedfile", "seed_save_interval"],
    "exchange": ["exchange_file", "exchange_interval"],
    "sources": ["kernel", "kernel_bytes", "kernel_interval", "system", "system_interval", "jitter",
                "jitter_interval", "jitter_alpha_exp", "external_commands", "command_interval", "command_timeout",
                "command_max_output", "file_interval", "low_water_bits"],
}
_SPECIAL = {"sockets": _conv_sockets, "trusted_uids": _conv_uids, "socket_mode": _conv_mode,
            "admin_mode": _conv_mode, "pidfile": _conv_opt_str, "admin_socket": _conv_opt_str,
            "seedfile": _conv_opt_str, "exchange_file": _conv_opt_str, "user": _conv_opt_str,
            "log_file": _conv_opt_str, "vmclock_device": _conv_opt_str}


def _field_converter(name: str):
    if name in _SPECIAL:
        return _SPECIAL[name]
    ftype = {f.name: f.type for f in dataclasses.fields(Settings)}[name]
    for py, conv in _CONVERTERS.items():
        if ftype == py.__name__:
            return conv
    return _conv_opt_str


# ---------------------------------------------------------------- validation
# One table, used for the file's values as they are read (so an error names
# file, section and key) and for the final settings at start and at SIGHUP.

def _number(lo: float, hi: float, *, integer: bool = False, lo_open: bool = False, unit: str = ""):
    def check(v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            return False
        return math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi
    def shown(x: float) -> str:
        return f"{x:.0f}" if x == int(x) else f"{x:g}"
    kind = "a whole number" if integer else "a finite number"
    low = f"above {shown(lo)} and at most" if lo_open else f"from {shown(lo)} to"
    return check, f"{kind}{unit} {low} {shown(hi)}"


_SECONDS = _number(0, 1e7, lo_open=True, unit=" of seconds")
_RULES: dict[str, tuple] = {
    "socket_mode": (lambda v: isinstance(v, int) and 0 <= v <= 0o777, "an octal mode from 0000 to 0777"),
    "admin_mode": (lambda v: isinstance(v, int) and 0 <= v <= 0o777, "an octal mode from 0000 to 0777"),
    "max_connections": _number(1, 1_000_000, integer=True),
    "max_connections_per_uid": _number(0, 1_000_000, integer=True, unit=" (0: a quarter of max_connections)"),
    "request_timeout": _SECONDS,
    "idle_timeout": _number(0, 1e7, unit=" of seconds (0: never)"),
    "busy_poll": _number(0, 1000, integer=True, unit=" of microseconds (0: never)"),
    "trusted_uids": (lambda v: all(isinstance(u, int) and 0 <= u < 2**32 - 1 for u in v),
                     "user names or uids from 0 to 4294967294"),
    "generator": (lambda v: v in ("chacha20", "hmac-drbg"), "chacha20 or hmac-drbg"),
    "drbg_hash": (lambda v: v in ("sha256", "sha512"), "sha256 or sha512"),
    "pool_bits": _number(256, 1 << 20, integer=True),
    "reseed_bits": _number(1, 1 << 20, integer=True),
    "reseed_interval": _SECONDS,
    "seed_save_interval": _SECONDS,
    "exchange_interval": _SECONDS,
    "log_level": (lambda v: isinstance(v, str) and v.lower() in ("debug", "info", "warning", "error"),
                  "debug, info, warning or error"),
    "kernel_bytes": _number(1, 256, integer=True),  # one getrandom call
    "kernel_interval": _SECONDS,
    "system_interval": _SECONDS,
    "jitter_interval": _SECONDS,
    "jitter_alpha_exp": _number(1, 64, integer=True),
    "command_interval": _SECONDS,
    "command_timeout": _SECONDS,
    "command_max_output": _number(1, 1 << 30, integer=True),
    "file_interval": _SECONDS,
    "low_water_bits": _number(0, 1 << 20, integer=True),
    "history_interval": _number(0.1, 86400, unit=" of seconds"),
}
_RATE = _number(0, 8, unit=" of bits per byte")


def _problem(key: str, value) -> str | None:
    """What is wrong with `value` for `key`, or None."""
    rule = _RULES.get(key)
    if rule is None or rule[0](value):
        return None
    return f"must be {rule[1]}"


def _shown(value) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def _parse_commands(section, where: str) -> list[Command]:
    import shlex  # only for a file with commands: see the imports above

    out = []
    for name, value in section.items():
        try:
            parts = shlex.split(value)
        except ValueError as e:
            raise ConfigError(f"{where}: [commands] {name}: {e}") from None
        if len(parts) < 2:
            raise ConfigError(f"{where}: [commands] {name}: expected 'RATE /path/to/cmd [args]'")
        try:
            rate = float(parts[0])
        except ValueError:
            raise ConfigError(f"{where}: [commands] {name}: rate {parts[0]!r} is not a number") from None
        if not _RATE[0](rate):
            raise ConfigError(f"{where}: [commands] {name}: rate {parts[0]} must be {_RATE[1]}")
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
            rate, max_bytes = float(parts[0]), int(parts[1])
        except ValueError as e:
            raise ConfigError(f"{where}: [files] {name}: {e}") from None
        if not _RATE[0](rate):
            raise ConfigError(f"{where}: [files] {name}: rate {parts[0]} must be {_RATE[1]}")
        if not 1 <= max_bytes <= 1 << 20:
            raise ConfigError(f"{where}: [files] {name}: MAX_BYTES {parts[1]} must be from 1 to 1048576")
        out.append(FileSource(parts[2], rate, max_bytes, name))
    return out


_UPSTREAM_KEYS = {"socket", "interval", "bytes", "credit_bits_per_byte"}


def _parse_upstream(section, where: str) -> Upstream:
    from prngd.egd import parse_address

    def fail(key: str, problem: str):
        return ConfigError(f"{where}: [upstream] {key} = {section[key].strip()}: {problem}")

    for key in section:
        if key not in _UPSTREAM_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} in [upstream] (known: {', '.join(sorted(_UPSTREAM_KEYS))})")
    spec = section.get("socket", "").strip()
    if not spec:
        raise ConfigError(f"{where}: [upstream] needs socket = PATH, tcp/HOST:PORT or vsock:CID:PORT")
    try:
        address = parse_address(spec)
    except ValueError as e:
        raise fail("socket", str(e)) from None
    if address.options:
        raise fail("socket", "socket options apply to listening sockets, not to an upstream")
    values = {}
    for key, conv, (check, wanted) in (("interval", float, _SECONDS), ("bytes", _conv_int, _number(1, 4096, integer=True)),
                                       ("credit_bits_per_byte", float, _RATE)):
        if key in section:
            try:
                value = conv(section[key].strip())
            except ValueError:
                raise fail(key, f"must be {wanted}") from None
            if not check(value):
                raise fail(key, f"must be {wanted}")
            values["nbytes" if key == "bytes" else key] = value
    return Upstream(spec, **values)


_COMMENT = ("#", ";")


def _refuse_continuations(text: str, where: str) -> None:
    """An indented line after `key = value` is refused: configparser would glue it to the value.

    `sockets = /a` followed by an indented `max_connections = 5` would
    otherwise be served as the sockets /a, max_connections, = and 5.
    """
    key = None
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith(_COMMENT):
            continue
        if line[0].isspace() and key is not None:
            raise ConfigError(f"{where}:{lineno}: indented line {stripped!r} would continue {key} of the line "
                              "above; prngd's values never span lines: put each setting on a line of its own, "
                              "starting at the left margin")
        key = None if stripped.startswith("[") else stripped.split("=", 1)[0].strip()


def _reworded(e: configparser.Error, where: str) -> str:
    """configparser's message in prngd's style: one line, file:line, what is wrong and what to do."""
    import configparser  # parse_ini's, already loaded: see the imports above

    if isinstance(e, configparser.MissingSectionHeaderError):
        if e.line.strip().startswith("["):
            return f"{where}:{e.lineno}: {e.line.strip()!r} is not a section header: write it as [name]"
        return (f"{where}:{e.lineno}: {e.line.strip()!r} comes before any [section]: prngd's settings go under "
                "[prngd], [pool], [sources]... (see prngd.conf(5) or prngd --example-config)")
    if isinstance(e, configparser.DuplicateSectionError):
        return f"{where}:{e.lineno}: [{e.section}] appears twice: keep one [{e.section}] and move its keys there"
    if isinstance(e, configparser.DuplicateOptionError):
        return f"{where}:{e.lineno}: [{e.section}] {e.option} is set twice: keep one of the two lines"
    if isinstance(e, configparser.ParsingError) and e.errors:
        lineno, line = e.errors[0]
        with contextlib.suppress(ValueError, SyntaxError):
            line = ast.literal_eval(line)  # configparser keeps the line as its repr()
        return (f"{where}:{lineno}: {line.strip()!r} is not 'key = value': write it so, or start it with # to make "
                "it a comment")
    # Anything else configparser may say (its messages span lines; ours is one).
    return f"{where}: cannot parse: " + "; ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())


def parse_ini(text: str, where: str = "<config>") -> dict:
    """Parse prngd's INI format into a dict of Settings field values, each checked against its rule."""
    import configparser  # only for an INI file: see the imports above

    cp = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=("#", ";"),
                                   inline_comment_prefixes=None)
    cp.optionxform = str  # keep command names as written
    _refuse_continuations(text, where)
    try:
        cp.read_string(text, source=where)
    except configparser.Error as e:
        raise ConfigError(_reworded(e, where)) from None
    values: dict = {}
    for sect in cp.sections():
        if sect == "commands":
            values["commands"] = _parse_commands(cp[sect], where)
            continue
        if sect == "files":
            values["files"] = _parse_files(cp[sect], where)
            continue
        if sect == "upstream":
            if len(cp[sect]):  # an empty section (the example's) is no upstream
                values["upstream"] = _parse_upstream(cp[sect], where)
            continue
        if sect not in _SECTIONS:
            raise ConfigError(f"{where}: unknown section [{sect}] (known: {', '.join(_SECTIONS)}, commands, files, upstream)")
        for key, raw in cp[sect].items():
            if key not in _SECTIONS[sect]:
                raise ConfigError(f"{where}: unknown key {key!r} in [{sect}]")
            try:
                value = _field_converter(key)(raw)
            except KeyError as e:
                raise ConfigError(f"{where}: [{sect}] {key} = {raw.strip()}: no such user {e.args[0]!r}"
                                  if key == "trusted_uids" else f"{where}: [{sect}] {key}: {e}") from None
            except ValueError:
                problem = _problem(key, None) or f"must be {_field_kind(key)}"
                raise ConfigError(f"{where}: [{sect}] {key} = {raw.strip()}: {problem}") from None
            problem = _problem(key, value)
            if problem:
                raise ConfigError(f"{where}: [{sect}] {key} = {raw.strip()}: {problem}")
            values[key] = value
    return values


def _field_kind(key: str) -> str:
    ftype = {f.name: f.type for f in dataclasses.fields(Settings)}[key]
    return {"bool": "yes or no", "int": "a whole number", "float": "a number"}.get(ftype, "text")


# Compiled at its first use (re's cache), by a start that reads a command file only.
_PRNGD_LINE = r'^\s*"([^"]*)"\s+(\S+)\s+([0-9.eE+-]+)\s*(#.*)?$'


def parse_prngd_cmdfile(text: str, where: str = "<cmdfile>") -> list[Command]:
    """PRNGD's command file: `"cmd args" /full/path rate`; `#` comments; path `undef` skips.

    PRNGD documents the rate as bits per byte of output; we credit exactly that
    (its code credits eight times as much, which we do not copy).
    """
    import shlex  # only for a command file: see the imports above

    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = re.match(_PRNGD_LINE, stripped)
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
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          "prngd reads its configuration as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    if looks_like_prngd_cmdfile(text):
        values = {"commands": parse_prngd_cmdfile(text, path)}
    else:
        values = parse_ini(text, path)
    settings = settings.replace(**values)
    validate(settings, path)
    return settings


_SECTION_OF = {key: sect for sect, keys in _SECTIONS.items() for key in keys}


def validate(s: Settings, where: str | None = None) -> None:
    """Every value in range and the combinations consistent; ConfigError names the key otherwise."""
    prefix = f"{where}: " if where else ""
    for key in _RULES:
        problem = _problem(key, getattr(s, key))
        if problem:
            raise ConfigError(f"{prefix}[{_SECTION_OF[key]}] {key} = {_shown(getattr(s, key))}: {problem}")
    if s.prediction_resistance and s.generator != "hmac-drbg":
        raise ConfigError(f"{prefix}[pool] prediction_resistance needs generator = hmac-drbg")
    if s.reseed_bits > s.pool_bits:
        raise ConfigError(f"{prefix}[pool] reseed_bits = {s.reseed_bits}: must not exceed pool_bits ({s.pool_bits})")
    if s.low_water_bits > s.pool_bits:
        raise ConfigError(f"{prefix}[sources] low_water_bits = {s.low_water_bits}: must not exceed pool_bits "
                          f"({s.pool_bits}), or the pool would always show LOW")
    for c in s.commands:
        if not _RATE[0](c.rate):
            raise ConfigError(f"{prefix}[commands] {c.name}: rate {c.rate:g} must be {_RATE[1]}")


def resolve_paths(s: Settings, base_dir: str) -> Settings:
    """Every relative path made absolute against `base_dir` (the directory prngd was started in).

    A detached daemon runs in /, and SIGHUP re-reads the file there: without
    this `prngd ./sock` would serve /sock.
    """
    from prngd.egd import Address, parse_address

    def absolute(path: str | None) -> str | None:
        return os.path.normpath(os.path.join(base_dir, path)) if path else path

    sockets = []
    for spec in s.sockets:
        try:
            address = parse_address(spec)
        except ValueError:
            sockets.append(spec)  # reported when the listeners open
            continue
        sockets.append(Address(path=absolute(address.path), options=address.options).spec if address.is_unix else spec)
    return s.replace(sockets=sockets, pidfile=absolute(s.pidfile), seedfile=absolute(s.seedfile),
                     exchange_file=absolute(s.exchange_file), admin_socket=absolute(s.admin_socket),
                     log_file=absolute(s.log_file), vmclock_device=absolute(s.vmclock_device),
                     files=[FileSource(absolute(f.path), f.rate, f.max_bytes, f.name) for f in s.files],
                     upstream=_resolve_upstream(s.upstream, absolute))


def _resolve_upstream(upstream: Upstream | None, absolute) -> Upstream | None:
    from prngd.egd import parse_address

    if upstream is None:
        return None
    address = parse_address(upstream.socket)
    if not address.is_unix:
        return upstream
    return Upstream(absolute(address.path), upstream.interval, upstream.nbytes, upstream.credit_bits_per_byte)
