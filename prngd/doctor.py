"""`prngd doctor`: does this machine need prngd, and what is there to fix?

Each check looks at one thing (the kernel's generator, hardware and VM
detectors, the EGD sockets and who serves them, the seed file, the programs
set up to read EGD, the service's sandbox) and says it in a line or a few of
plain words.  Checks run one after the other, each in a thread with a
deadline: one that fails or hangs becomes a line saying so, never a
traceback, and the report always ends with the verdict.  Nothing is written:
the seed file is read, never replaced, and sockets are asked only their pid.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from prngd import client, config, egd, ownfile, privileges, seedfile
from prngd.peercred import credentials

# Where EGD clients look: OpenSSL's RAND_egd() defaults and --with-rand-seed=egd
# list, PRNGD's and egd.pl's habits, and where examples/ puts the socket.
EGD_PATHS = ("/var/run/egd-pool", "/dev/egd-pool", "/etc/egd-pool", "/etc/entropy", "/var/run/entropy",
             "/tmp/entropy", "/run/egd-pool", "/run/prngd/egd-pool")
HWRNG_SYSFS = "/sys/class/misc/hw_random"
HWRNG_DEVICE = "/dev/hwrng"
VMCLOCK_DEVICE = "/dev/vmclock0"
ACPI_DEVICES = "/sys/bus/acpi/devices"
VMGENID_DRIVER = "/sys/bus/platform/drivers/vmgenid"
VMGENID_IDS = ("VMGENCTR", "QEMUVGID", "VM_GEN_COUNTER")  # drivers/virt/vmgenid.c
ENTROPY_AVAIL = "/proc/sys/kernel/random/entropy_avail"
POSTFIX_CONFIG_DIR = "/etc/postfix"
BINARY_SCAN_LIMIT = 32 << 20  # bytes of an ssh binary searched for its PRNGD code
TEXT_LIMIT = 1 << 20  # bytes of a configuration file read

DEFAULT_TIMEOUT = 5.0


@dataclass
class Context:
    """What the checks look at: the sockets and seed file prngd is configured with, and where Postfix keeps its own."""

    sockets: list[str]
    seedfile: str | None
    timeout: float = DEFAULT_TIMEOUT
    postfix_dir: str = POSTFIX_CONFIG_DIR
    # Filled in by the EGD-clients check, read by the sockets check: the paths those clients use.
    client_paths: dict[str, str] = field(default_factory=dict)  # path -> who reads it
    # Filled in by the sockets check, read by the sandbox check: who serves what.
    servers: dict[int, str] = field(default_factory=dict)  # pid -> the socket it serves


@dataclass
class Check:
    name: str  # the key in --json
    lines: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    needs: list[str] = field(default_factory=list)  # why this machine needs an EGD server
    fixes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- small bounded readers

def _read_text(path: str, limit: int = 4096) -> str:
    """A small text file (sysfs, procfs, a config), read without blocking; raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"not a regular file ({ownfile.describe(os.fstat(fd).st_mode)})", path)
        return os.read(fd, limit).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _run(argv: list[str], timeout: float) -> str | None:
    """A command's stdout and stderr, or None when it is missing, fails to start or overruns."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                             env=dict(os.environ, LC_ALL="C"))
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout + out.stderr).decode("utf-8", "replace")


def _cmdline(pid: int) -> str:
    try:
        raw = _read_text(f"/proc/{pid}/cmdline", 4096)
    except OSError as e:
        return f"(its command line: {e.strerror})"
    text = " ".join(part for part in raw.split("\0") if part)
    return text if len(text) <= 120 else text[:117] + "..."


def _age(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 else ''}"
    return f"{max(0, int(seconds))} s"


def _kernel_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(m[1]), int(m[2])) if m else (0, 0)


# ---------------------------------------------------------------- the kernel

def check_getrandom(ctx: Context, c: Check) -> None:
    if not hasattr(os, "getrandom"):
        c.facts["available"] = False
        c.lines.append("getrandom(): not offered on this system (not Linux)")
        c.needs.append("there is no getrandom()")
        return
    try:
        os.getrandom(1, os.GRND_NONBLOCK)
        available = True
    except BlockingIOError:
        available = True  # there, but the generator is not ready: the next check says so
    except OSError as e:
        available = False
        why = ("the kernel is older than 3.17" if e.errno == errno.ENOSYS
               else "a seccomp filter or the kernel refuses it")
        c.lines.append(f"getrandom(): not available ({e.strerror}: {why}); programs fall back to /dev/urandom "
                       "or to an EGD socket")
        c.needs.append("getrandom() is not available")
    c.facts["available"] = available
    if available:
        c.lines.append("getrandom(): available")


def check_kernel_crng(ctx: Context, c: Check) -> None:
    release = os.uname().release
    c.facts["kernel"] = release
    try:
        os.getrandom(1, os.GRND_NONBLOCK)
        ready = True
    except BlockingIOError:
        ready = False
    except (AttributeError, OSError):
        ready = None
    c.facts["ready"] = ready
    if ready:
        c.lines.append(f"kernel CRNG: ready (getrandom with GRND_NONBLOCK answers at once; Linux {release})")
    elif ready is False:
        c.lines.append(f"kernel CRNG: NOT ready: getrandom would block (early boot, or a VM with no entropy "
                       f"source; Linux {release})")
        c.needs.append("the kernel's generator is not ready")
        c.fixes.append("give the kernel an entropy source: a virtio-rng device for a VM, or "
                       "`prngd feed-kernel` as root (credits what it feeds)")
    else:
        c.lines.append(f"kernel CRNG: readiness unknown without getrandom (Linux {release})")


def check_entropy_avail(ctx: Context, c: Check) -> None:
    bits = int(_read_text(ENTROPY_AVAIL).strip())
    c.facts["bits"] = bits
    if _kernel_version() >= (5, 18):
        c.lines.append(f"entropy_avail: {bits} bits (since Linux 5.18 it says 256 whenever the generator is "
                       "ready; it does not run down as it is read)")
    else:
        low = bits < 128
        c.lines.append(f"entropy_avail: {bits} bits" + (" (low: /dev/random blocks on this kernel)" if low else ""))


def check_hwrng(ctx: Context, c: Check) -> None:
    if not os.path.isdir("/sys/class"):
        c.facts.update(current=None, available=None)
        c.lines.append("hardware RNG: cannot tell: /sys is not mounted here")
        return
    try:
        current = _read_text(f"{HWRNG_SYSFS}/rng_current").strip()
        available = _read_text(f"{HWRNG_SYSFS}/rng_available").split()
    except FileNotFoundError:
        c.facts.update(current=None, available=[])
        c.lines.append("hardware RNG: none (no hw_random driver loaded): the kernel gathers from interrupts and "
                       "CPU timing only")
        return
    try:
        quality = int(_read_text(f"{HWRNG_SYSFS}/rng_quality").strip())
    except (OSError, ValueError):
        quality = None
    device = os.path.exists(HWRNG_DEVICE)
    c.facts.update(current=current, available=available, quality=quality, device=device,
                   device_readable=device and os.access(HWRNG_DEVICE, os.R_OK))
    if current == "none" or not current:
        c.lines.append(f"hardware RNG: none selected (rng_available: {' '.join(available) or 'none'})")
        return
    feeds = (f"quality {quality} of 1024: the kernel feeds it into its generator itself" if quality
             else "quality 0: the kernel does not feed it in (rngd could)")
    access = ("readable" if c.facts["device_readable"] else "root only") if device else "absent"
    c.lines.append(f"hardware RNG: {current} in use ({feeds}); {HWRNG_DEVICE} {access}")


# ---------------------------------------------------------------- machine, VM generation, clocks

def check_machine(ctx: Context, c: Check) -> None:
    kinds = []
    try:
        if re.search(r"^flags\s*:.*\bhypervisor\b", _read_text("/proc/cpuinfo", 1 << 20), re.M):
            kinds.append("a virtual machine (the CPU says hypervisor)")
    except OSError:
        pass
    try:
        vendor = _read_text("/sys/class/dmi/id/sys_vendor").strip()
    except OSError:
        vendor = None
    container = None
    if os.path.exists("/.dockerenv"):
        container = "Docker"
    elif os.path.exists("/run/.containerenv"):
        container = "Podman"
    elif os.environ.get("container"):
        container = os.environ["container"]
    if container:
        kinds.append(f"a {container} container (it shares its host's kernel, and credits entropy to it only "
                     "with CAP_SYS_ADMIN)")
    c.facts.update(virtual_machine=any("virtual" in k for k in kinds), dmi_vendor=vendor, container=container)
    what = " and ".join(kinds) or "no sign of a virtual machine or a container"
    c.lines.append(f"machine: {what}" + (f"; DMI vendor {vendor}" if vendor else ""))


def check_vm_generation(ctx: Context, c: Check) -> None:
    # vmclock: the device's presence and readability only; prngd.vmclock reads it.
    present = os.path.exists(VMCLOCK_DEVICE)
    readable = present and os.access(VMCLOCK_DEVICE, os.R_OK)
    c.facts["vmclock"] = {"present": present, "readable": readable}
    if readable:
        c.lines.append(f"VM generation (vmclock): {VMCLOCK_DEVICE} present and readable: its generation "
                       "counter changes when a snapshot is restored")
    elif present:
        c.lines.append(f"VM generation (vmclock): {VMCLOCK_DEVICE} present but not readable by uid {os.geteuid()}")
        c.fixes.append(f"let prngd's user read {VMCLOCK_DEVICE} (a udev rule), so it sees restores at once")
    else:
        c.lines.append(f"VM generation (vmclock): no {VMCLOCK_DEVICE} (it needs Linux 6.13+ and a hypervisor "
                       "that offers vmclock)")
    ids = []
    try:
        ids = sorted(name for name in os.listdir(ACPI_DEVICES) if name.split(":")[0] in VMGENID_IDS)
    except OSError:
        pass
    bound = [name for name in ids if os.path.exists(os.path.join(VMGENID_DRIVER, name))]
    c.facts["vmgenid"] = {"devices": ids, "driver_bound": bool(bound)}
    if not os.path.isdir("/sys/bus"):
        c.facts["vmgenid"] = None
        c.lines.append("VM generation (ACPI vmgenid): cannot tell: /sys is not mounted here")
    elif bound:
        c.lines.append(f"VM generation (ACPI vmgenid): {', '.join(bound)} with the vmgenid driver: the kernel "
                       "reseeds its own generator when a snapshot is restored")
    elif ids:
        c.lines.append(f"VM generation (ACPI vmgenid): {', '.join(ids)} present, no driver bound "
                       "(CONFIG_VMGENID): restores go unnoticed by the kernel")
    else:
        c.lines.append("VM generation (ACPI vmgenid): none")
    c.lines.append("clock jumps: prngd reseeds from the kernel when CLOCK_BOOTTIME or CLOCK_REALTIME jumps "
                   "against CLOCK_MONOTONIC (a resume, a snapshot restore); always on")


# ---------------------------------------------------------------- EGD sockets

def _peer(path: str, timeout: float) -> tuple[int, int]:
    """(pid, uid) of the process that listens on a Unix socket, as the kernel tells it (SO_PEERCRED)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        creds = credentials(s)
    if creds is None:
        raise OSError(f"{path}: the kernel gives no peer credentials")
    return creds[0], creds[1]


def _probe_socket(spec: str, timeout: float) -> tuple[str, dict]:
    """One line about an EGD socket (a path or HOST:PORT) and its facts."""
    address = egd.parse_address(spec)
    facts: dict = {"exists": True}
    if address.is_unix:
        path = address.path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return f"{path}: absent", {"exists": False}
        where = path
        if stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(path)
            facts["link_to"] = target
            where = f"{path} (-> {target})"
            try:
                st = os.stat(path)
            except OSError:
                return f"{where}: a symbolic link to nothing", dict(facts, serves=False)
        if not stat.S_ISSOCK(st.st_mode):
            facts.update(serves=False, kind=ownfile.describe(st.st_mode))
            return f"{where}: {ownfile.describe(st.st_mode)}, not a socket: EGD clients that look here fail", facts
        try:
            peer_pid, peer_uid = _peer(path, timeout)
        except OSError as e:
            facts["serves"] = False
            err = client.error_for(e, address, "connecting")
            return f"{where}: a socket nobody serves ({err}); a daemon that died without removing it?", facts
    else:
        where, peer_pid, peer_uid = str(address), None, None
    try:
        with client.EGDClient(address, timeout) as egd_client:
            pid = egd_client.pid()
    except client.EGDError as e:
        facts["serves"] = False
        return f"{where}: does not answer as an EGD server: {e}", facts
    facts.update(serves=True, pid=pid)
    if peer_pid is None:
        return f"{where}: an EGD server answers, pid {pid} by its own word (TCP: no more is known)", facts
    facts.update(peer_pid=peer_pid, peer_uid=peer_uid)
    if peer_pid == 0:  # the kernel cannot name the listener in our pid namespace
        return (f"{where}: served by pid {pid} by its own word, from another pid namespace (uid {peer_uid} "
                "here): a daemon outside this container"), facts
    facts["command"] = _cmdline(peer_pid)
    if pid == peer_pid:
        return f"{where}: served by pid {pid} (uid {peer_uid}): {facts['command']}", facts
    # Socket activation (systemd listened for it), or a server in another pid namespace.
    return (f"{where}: served by pid {pid} by its own word; the socket is held by pid {peer_pid} "
            f"(uid {peer_uid}): {facts['command']}"), facts


def check_egd_sockets(ctx: Context, c: Check) -> None:
    candidates = list(dict.fromkeys([*ctx.sockets, *ctx.client_paths, *EGD_PATHS, config.default_socket()]))
    absent = []
    c.facts["sockets"] = {}
    for spec in candidates:
        try:
            line, facts = _probe_socket(spec, ctx.timeout)
        except (OSError, ValueError) as e:
            line, facts = f"{spec}: could not check ({e})", {"error": str(e)}
        c.facts["sockets"][spec] = facts
        if facts.get("serves") and facts.get("peer_pid") == facts["pid"]:
            ctx.servers.setdefault(facts["pid"], spec)
        if facts.get("exists") is False:
            absent.append(spec)
            continue
        c.lines.append(f"EGD socket {line}")
    if absent:
        c.lines.append(f"EGD sockets absent: {', '.join(absent)}")


# ---------------------------------------------------------------- the seed file

def check_seed(ctx: Context, c: Check) -> None:
    path = ctx.seedfile
    c.facts["path"] = path
    if not path:
        c.lines.append("seed file: none configured (-n): every start credits only the kernel's randomness")
        return
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        c.facts["state"] = "absent"
        c.lines.append(f"seed file {path}: absent (none written yet; the first start writes it)")
        return
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC))
    except PermissionError as e:
        c.facts.update(state="unreadable", owner_uid=st.st_uid)
        c.lines.append(f"seed file {path}: cannot read it as uid {os.geteuid()} ({e.strerror}); it belongs to "
                       f"uid {st.st_uid}: run prngd doctor as root or as that user to see it")
        return
    except OSError:
        pass  # a symbolic link, a device...: said below, in the words a start would use
    from prngd.identity import machine_identity

    fingerprint = machine_identity().fingerprint
    try:
        origin, bits, note = seedfile.assess(path, fingerprint, st.st_uid)
    except seedfile.ForeignFile as e:
        c.facts["state"] = "foreign"
        c.lines.append(str(e).replace(f"seed file {path}: ", f"seed file {path}: prngd would refuse to start: ", 1))
        c.fixes.append(f"move what is at {path} away, or name another seed file")
        return
    c.facts.update(state="present", bytes=st.st_size, owner_uid=st.st_uid, mode=f"{stat.S_IMODE(st.st_mode):04o}",
                   age_seconds=round(time.time() - st.st_mtime), origin=origin, credit_bits=bits, note=note)
    try:
        seed = seedfile.read_seed(path)
        c.facts.update(version=seed.version, written_seeded=seed.credit, machine_bound=seed.fingerprint is not None)
    except (OSError, seedfile.SeedFormatError):
        pass
    head = f"seed file {path}: {st.st_size} bytes, written {_age(time.time() - st.st_mtime)} ago"
    if origin:
        head += f" ({origin})"
    if bits:
        c.lines.append(f"{head}: the next start credits {bits} bits (prngd running as its owner, uid {st.st_uid})")
    else:
        c.lines.append(f"{head}: the next start mixes it in without credit: {note}")
    if fingerprint is None:
        c.fixes.append("nothing identifies this machine (no machine-id, DMI UUID or permanent MAC), so no seed "
                       "is ever credited: give it an /etc/machine-id")


# ---------------------------------------------------------------- programs that read EGD

def _postfix_random_source(ctx: Context) -> tuple[str | None, str]:
    """Postfix's tls_random_source (None: Postfix is not here) and where it came from."""
    out = _run(["postconf", "-c", ctx.postfix_dir, "-h", "tls_random_source"], ctx.timeout)
    if out is not None and "fatal" not in out:
        return out.strip(), "postconf"
    main_cf = os.path.join(ctx.postfix_dir, "main.cf")
    try:
        text = _read_text(main_cf, TEXT_LIMIT)
    except FileNotFoundError:
        return None, main_cf
    value = ""
    for line in text.splitlines():  # the last assignment wins, as in Postfix
        m = re.match(r"^tls_random_source\s*=\s*(.*?)\s*$", line)
        if m:
            value = m[1]
    return value, main_cf


def _ssh_reads_prngd() -> dict[str, bool]:
    """Which OpenSSH binaries carry the code that reads PRNGD/EGD (--with-prngd-socket or -port)."""
    found = {}
    for name in ("ssh", "sshd"):
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if not path:
            continue
        try:
            with open(path, "rb") as f:
                found[path] = b"to PRNGD " in f.read(BINARY_SCAN_LIMIT)
        except OSError:
            continue
    return found


def check_egd_clients(ctx: Context, c: Check) -> None:
    value, source = _postfix_random_source(ctx)
    c.facts["postfix"] = {"tls_random_source": value, "from": source}
    if value is None:
        c.lines.append("Postfix: not installed (no main.cf)")
    elif value.startswith("egd:"):
        path = value[4:]
        ctx.client_paths[path] = "Postfix"
        c.lines.append(f"Postfix: tls_random_source = {value} ({source}): it reads EGD at {path}")
        c.needs.append(f"Postfix reads EGD at {path}")
    else:
        c.lines.append(f"Postfix: tls_random_source = {value or '(unset)'} ({source}): not EGD")

    out = _run(["openssl", "version", "-a"], ctx.timeout)
    if out is None:
        c.facts["openssl"] = None
        c.lines.append("OpenSSL: no openssl command")
    else:
        version = " ".join(out.split()[:2]) or "?"  # "OpenSSL 3.0.19"
        m = re.search(r"^Seeding source:\s*(.*)$", out, re.M)
        seeding = m[1].strip() if m else "not said (OpenSSL before 1.1.1)"
        no_egd = [h for h in sorted(glob.glob("/usr/include/openssl/configuration.h")
                                    + glob.glob("/usr/include/*-linux-*/openssl/configuration.h")
                                    + glob.glob("/usr/include/openssl/opensslconf.h"))
                  if re.search(r"#\s*define\s+OPENSSL_NO_EGD\b", _safe_text(h))]
        egd_seeded = "egd" in seeding.lower()
        c.facts["openssl"] = {"version": version, "seeding": seeding, "egd_seeding": egd_seeded,
                              "no_egd_headers": no_egd}
        egd_api = "; RAND_egd() compiled out (OPENSSL_NO_EGD)" if no_egd else ""
        c.lines.append(f"OpenSSL: {version}: seeds from {seeding}" + (": EGD" if egd_seeded else ", not EGD") + egd_api)
        if egd_seeded:
            c.needs.append("OpenSSL seeds from EGD")
            for path in ("/var/run/egd-pool", "/dev/egd-pool", "/etc/egd-pool", "/etc/entropy"):
                ctx.client_paths.setdefault(path, "OpenSSL")

    ssh = _ssh_reads_prngd()
    said = (_run(["ssh", "-V"], ctx.timeout) or "").strip()
    version = said.split(",")[0] if said.startswith("OpenSSH") else None  # "OpenSSH_9.2p1 Debian-2"
    c.facts["openssh"] = {"version": version, "reads_prngd": ssh}
    name = f"OpenSSH: {version or ', '.join(ssh)}"
    if not ssh:
        c.lines.append("OpenSSH: not installed")
    elif any(ssh.values()):
        built = ", ".join(p for p, yes in ssh.items() if yes)
        c.lines.append(f"{name}: {built} built to read PRNGD/EGD (--with-prngd-socket or -port)")
        c.needs.append("OpenSSH is built to read PRNGD/EGD")
    else:
        c.lines.append(f"{name}: not built for PRNGD/EGD")


def _safe_text(path: str) -> str:
    try:
        return _read_text(path, TEXT_LIMIT)
    except OSError:
        return ""


# ---------------------------------------------------------------- the service

UNIT_PROPERTIES = ("LoadState", "ActiveState", "SubState", "User", "DynamicUser", "ProtectSystem", "ProtectHome",
                   "PrivateTmp", "PrivateDevices", "NoNewPrivileges", "CapabilityBoundingSet")


def _process_sandbox(pid: int) -> dict:
    """What confines a process: its uids, effective capabilities, no_new_privs and seccomp mode."""
    status = privileges.status_fields(pid)
    caps = int(status["CapEff"], 16)
    return {"uid": int(status["Uid"].split()[1]), "capabilities": f"{caps:#x}", "capability_count": caps.bit_count(),
            "no_new_privs": status.get("NoNewPrivs", "0") == "1",
            "seccomp": {"0": "none", "1": "strict", "2": "filter"}.get(status.get("Seccomp", ""), "unknown")}


def check_sandbox(ctx: Context, c: Check) -> None:
    c.facts["processes"] = {}
    for pid, spec in ctx.servers.items():
        try:
            box = _process_sandbox(pid)
        except (OSError, KeyError, ValueError, IndexError) as e:
            c.lines.append(f"process: pid {pid} (serving {spec}): its confinement could not be read ({e})")
            continue
        c.facts["processes"][str(pid)] = box
        caps = "none" if not box["capability_count"] else f"{box['capability_count']} ({box['capabilities']})"
        c.lines.append(f"process: pid {pid} (serving {spec}) runs as uid {box['uid']}, capabilities {caps}, "
                       f"no_new_privs {'yes' if box['no_new_privs'] else 'no'}, seccomp {box['seccomp']}")
        if box["uid"] == 0 and box["capability_count"] and "prngd" in _cmdline(pid):
            c.fixes.append(f"pid {pid} serves {spec} as root with capabilities it does not need: start it with "
                           "-u USER, or use examples/systemd/prngd.service (a dynamic user, no capabilities)")
    if not os.path.isdir("/run/systemd/system"):
        try:
            init = _read_text("/proc/1/comm").strip()
        except OSError:
            init = "unknown"
        c.facts["systemd"] = False
        c.lines.append(f"service: systemd is not running (PID 1 is {init}): no unit sandbox to check")
        return
    c.facts["systemd"] = True
    out = _run(["systemctl", "show", "prngd.service", "--property=" + ",".join(UNIT_PROPERTIES)], ctx.timeout)
    if out is None:
        c.lines.append("service: systemctl did not answer")
        return
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    c.facts["unit"] = props
    if props.get("LoadState") != "loaded":
        c.lines.append("service: no prngd.service unit installed (see examples/systemd/)")
        return
    caps = props.get("CapabilityBoundingSet", "")
    user = "a dynamic user" if props.get("DynamicUser") == "yes" else (f"user {props['User']}" if props.get("User")
                                                                       else "root")
    c.lines.append(f"service: prngd.service {props.get('ActiveState')} ({props.get('SubState')}), runs as {user}, "
                   f"ProtectSystem={props.get('ProtectSystem')}, PrivateDevices={props.get('PrivateDevices')}, "
                   f"NoNewPrivileges={props.get('NoNewPrivileges')}, capabilities: {caps or 'none'}")
    if props.get("DynamicUser") != "yes" and not props.get("User"):
        c.fixes.append("prngd.service runs as root: use the example unit's DynamicUser=yes")


# ---------------------------------------------------------------- running them

CHECKS: tuple[Callable[[Context, Check], None], ...] = (
    check_kernel_crng, check_getrandom, check_entropy_avail, check_hwrng, check_machine, check_vm_generation,
    check_egd_clients, check_egd_sockets, check_seed, check_sandbox)


def run_check(fn: Callable[[Context, Check], None], ctx: Context, deadline: float) -> Check:
    """`fn` fills a Check in a thread, for at most `deadline` seconds; a failure or an overrun
    is a line after what it said so far."""
    c = Check(fn.__name__.removeprefix("check_"))
    failure: list[BaseException] = []

    def target():
        try:
            fn(ctx, c)
        except BaseException as e:  # any failure is the check's line, never a traceback
            failure.append(e)

    t = threading.Thread(target=target, name=f"doctor-{c.name}", daemon=True)
    t.start()
    t.join(deadline)
    if t.is_alive():  # left behind: its later lines are not shown
        return Check(c.name, [*c.lines, f"{c.name}: no answer within {deadline:g} s; the rest not checked"],
                     dict(c.facts, error="timeout"), list(c.needs), list(c.fixes))
    if failure:
        e = failure[0]
        what = f"{e.strerror} ({e.filename})" if isinstance(e, OSError) and e.strerror and e.filename else str(e)
        c.lines.append(f"{c.name}: could not check: {what or type(e).__name__}")
        c.facts["error"] = what or type(e).__name__
    return c


def _unserved(ctx: Context, sockets: dict) -> list[str]:
    """A fix for each program set up to read EGD where none of its paths is served."""
    by_program: dict[str, list[str]] = {}
    for path, who in ctx.client_paths.items():
        by_program.setdefault(who, []).append(path)
    return [f"{who} reads EGD at {' or '.join(paths)}, and nothing serves it: run `prngd {paths[0]}`"
            for who, paths in by_program.items() if not any(sockets.get(p, {}).get("serves") for p in paths)]


def verdict(needs: list[str], sockets: dict) -> dict:
    served = {spec: f["pid"] for spec, f in sockets.items() if f.get("serves")}
    serving = ", ".join(f"{spec} (pid {pid})" for spec, pid in served.items())
    if needs:
        line = f"this machine needs prngd because {'; '.join(needs)}"
        line += f"; served now: {serving}" if serving else "; nothing serves EGD here now"
    else:
        line = ("this machine does not need prngd because the kernel's generator is ready (getrandom answers) and "
                "nothing here is set up to read EGD")
        if serving:
            line += f"; {serving} served anyway: keep it for containers, VMs or programs elsewhere that read it"
    return {"needs_prngd": bool(needs), "because": needs, "serving": served, "line": line}


def run(ctx: Context, checks=CHECKS) -> dict:
    """Every check's lines and facts, the fixes and the verdict (what --json prints)."""
    done = [run_check(fn, ctx, ctx.timeout + 1.0) for fn in checks]
    sockets = next((c.facts.get("sockets", {}) for c in done if c.name == "egd_sockets"), {})
    fixes = [f for c in done for f in c.fixes] + _unserved(ctx, sockets)
    return {"checks": {c.name: dict(c.facts, lines=c.lines) for c in done}, "fixes": fixes,
            "verdict": verdict([n for c in done for n in c.needs], sockets)}


def render(report: dict) -> str:
    lines = [line for check in report["checks"].values() for line in check["lines"]]
    lines += [f"fix: {f}" for f in report["fixes"]]
    lines.append(f"verdict: {report['verdict']['line']}")
    return "\n".join(lines) + "\n"
