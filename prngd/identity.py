"""This machine's identity, as a fingerprint that never reveals what it was made from.

A seed file is credited only on the machine that wrote it (seedfile.py): a
copy of a disk, an image or a snapshot must not count its seed as secret on
every machine started from it.  The fingerprint says "same machine or not",
nothing more.

Inputs, each used only when present and plausible:

* machine-id: /etc/machine-id, else /var/lib/dbus/machine-id (32 hex digits;
  empty, "uninitialized" or all zeros count as absent).  One per installation,
  made at first boot; an image that ships an empty one gets a new one per
  clone, and `virt-sysprep` or `systemd-machine-id-setup` renew it.
* DMI product UUID: /sys/class/dmi/id/product_uuid (readable by root only).
  Set by the firmware or the hypervisor, new for each VM a hypervisor clones;
  all zeros, all ones and the well-known placeholder count as absent.
* Permanent MAC addresses of physical interfaces: every /sys/class/net/NAME
  with a `device` link, not on USB (a dock or a dongle comes and goes).  The
  address counts when addr_assign_type is 0 (permanent); otherwise the
  permanent address is asked of the driver (ethtool's GPERMADDR), so a
  randomised or administrator-set address changes nothing.  Zero and
  broadcast addresses count as absent.  Interface names are not used, so a
  rename changes nothing.

Left out on purpose: the hostname (set by hand, and usually copied with an
image), IP addresses (DHCP leases move), disk serials and filesystem UUIDs
(they travel with the disk image: exactly what a clone copies), CPU or memory
figures (identical across a fleet).

The fingerprint is BLAKE2b-256 keyed with a constant for prngd, over the
framed inputs (systemd's "application-specific machine ID" idea): it cannot
be matched against other hashes of the same machine-id, and the raw values
never leave this module.  A machine with none of the inputs (a minimal
container with no machine-id and no physical interface) has no identity:
`fingerprint` is None and seedfile never credits a seed there, since it cannot
tell its own seed from one copied with the image.
"""

from __future__ import annotations

import os
import re
import struct

from Crypto.Hash import BLAKE2b

from prngd.value import Value

FINGERPRINT_SIZE = 32
# A fixed key makes the fingerprint prngd's own: the same machine-id hashed
# by anyone else gives an unrelated value.
_KEY = b"prngd machine fingerprint v1"

MACHINE_ID_PATHS = ("etc/machine-id", "var/lib/dbus/machine-id")
DMI_UUID_PATH = "sys/class/dmi/id/product_uuid"
NET_PATH = "sys/class/net"

# Patterns compiled at their first use (re's cache): a start without a seed file never needs them.
_HEX32 = r"^[0-9a-f]{32}$"
_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# Firmware that never set a UUID: the same value on every board.
_PLACEHOLDER_UUIDS = frozenset({
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009",
})
_MAC = r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$"

# linux/sockios.h and linux/ethtool.h
_SIOCETHTOOL = 0x8946
_ETHTOOL_GPERMADDR = 0x20
_MAX_ADDR_LEN = 32


class Identity(Value):
    """This machine's fingerprint; immutable and equal by value (prngd.value)."""

    __slots__ = ("fingerprint", "inputs")

    def __init__(self, fingerprint: bytes | None, inputs: tuple[str, ...] = ()) -> None:
        object.__setattr__(self, "fingerprint", fingerprint)  # None: nothing identifies this machine
        object.__setattr__(self, "inputs", inputs)  # which kinds were used, for messages: never values


def _read_text(path: str, limit: int = 256) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("ascii", "replace").strip().lower()
    except OSError:
        return None


def _machine_id(root: str) -> str | None:
    for rel in MACHINE_ID_PATHS:
        value = _read_text(os.path.join(root, rel))
        if value is not None:
            # The first file that exists decides: an empty /etc/machine-id is an
            # image waiting for its first boot, not a cue to use dbus's copy.
            return value if re.match(_HEX32, value) and value != "0" * 32 else None
    return None


def _dmi_uuid(root: str) -> str | None:
    value = _read_text(os.path.join(root, DMI_UUID_PATH))
    if value is None or not re.match(_UUID, value) or value in _PLACEHOLDER_UUIDS:
        return None
    return value


def permanent_address(name: str) -> str | None:
    """The permanent MAC address of interface `name`, from its driver (ethtool -P); None if unknown."""
    import ctypes
    import fcntl
    import socket

    buf = ctypes.create_string_buffer(struct.pack("=II", _ETHTOOL_GPERMADDR, _MAX_ADDR_LEN) + bytes(_MAX_ADDR_LEN))
    # struct ifreq: the name, then (in the union) a pointer to the ethtool request.
    ifr = struct.pack("16sP", name.encode()[:15], ctypes.addressof(buf)).ljust(40, b"\0")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), _SIOCETHTOOL, ifr)
    except OSError:
        return None
    size = struct.unpack_from("=I", buf.raw, 4)[0]
    if size != 6:
        return None
    return buf.raw[8:14].hex(":")


def _plausible_mac(mac: str | None) -> bool:
    return bool(mac) and re.match(_MAC, mac) is not None and mac not in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff")


def _permanent_macs(root: str, perm_addr) -> list[str]:
    net = os.path.join(root, NET_PATH)
    try:
        names = sorted(os.listdir(net))
    except OSError:
        return []
    macs = set()
    for name in names:
        device = os.path.join(net, name, "device")
        if not os.path.exists(device):
            continue  # virtual: lo, bridges, veth, tun, bonds
        if "/usb" in os.path.realpath(device):
            continue  # removable
        assign = _read_text(os.path.join(net, name, "addr_assign_type"))
        mac = _read_text(os.path.join(net, name, "address")) if assign == "0" else perm_addr(name)
        if _plausible_mac(mac):
            macs.add(mac)
    return sorted(macs)


def _frame(kind: bytes, value: str) -> bytes:
    data = value.encode("ascii")
    return struct.pack(">B", len(kind)) + kind + struct.pack(">H", len(data)) + data


def machine_identity(root: str = "/", perm_addr=None) -> Identity:
    """This machine's Identity; `root` and `perm_addr` are for tests (another tree, no ioctl)."""
    if perm_addr is None:
        # The driver is asked only about the live system, never about a test tree.
        perm_addr = permanent_address if root == "/" else (lambda name: None)
    parts: list[bytes] = []
    inputs: list[str] = []
    mid = _machine_id(root)
    if mid:
        parts.append(_frame(b"machine-id", mid))
        inputs.append("machine-id")
    uuid = _dmi_uuid(root)
    if uuid:
        parts.append(_frame(b"dmi-product-uuid", uuid))
        inputs.append("DMI product UUID")
    macs = _permanent_macs(root, perm_addr)
    for mac in macs:
        parts.append(_frame(b"mac", mac))
    if macs:
        inputs.append(f"{len(macs)} permanent MAC address{'es' if len(macs) > 1 else ''}")
    if not parts:
        return Identity(None, ())
    h = BLAKE2b.new(digest_bits=8 * FINGERPRINT_SIZE, key=_KEY)
    for part in parts:
        h.update(part)
    return Identity(h.digest(), tuple(inputs))
