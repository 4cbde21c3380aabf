"""prngd.identity: which inputs make the machine fingerprint, on fake /etc and /sys trees."""

from __future__ import annotations


import pytest

from prngd.identity import Identity, machine_identity

MID = "0123456789abcdef0123456789abcdef"
UUID = "4c4c4544-0042-3510-8051-b4c04f4e4332"


def tree(root, machine_id=MID, dbus_id=None, uuid=UUID, nics=(("eth0", "pci", "0", "52:54:00:12:34:56"),)):
    """A fake root: machine-id files, DMI UUID, and /sys/class/net entries (name, bus, assign type, address)."""
    if machine_id is not None:
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc" / "machine-id").write_text(machine_id + "\n")
    if dbus_id is not None:
        (root / "var/lib/dbus").mkdir(parents=True, exist_ok=True)
        (root / "var/lib/dbus/machine-id").write_text(dbus_id + "\n")
    if uuid is not None:
        (root / "sys/class/dmi/id").mkdir(parents=True, exist_ok=True)
        (root / "sys/class/dmi/id/product_uuid").write_text(uuid + "\n")
    net = root / "sys/class/net"
    net.mkdir(parents=True, exist_ok=True)
    for name, bus, assign, address in nics:
        d = net / name
        d.mkdir()
        (d / "addr_assign_type").write_text(assign + "\n")
        (d / "address").write_text(address + "\n")
        if bus is not None:
            dev = root / "sys/devices" / bus / name
            dev.mkdir(parents=True)
            (d / "device").symlink_to(dev)
    return str(root)


def fp(root, **kw) -> bytes | None:
    return machine_identity(root, **kw).fingerprint


def test_all_inputs_used_and_never_exposed(tmp_path):
    ident = machine_identity(tree(tmp_path))
    assert isinstance(ident, Identity) and len(ident.fingerprint) == 32
    assert ident.inputs == ("machine-id", "DMI product UUID", "1 permanent MAC address")
    text = repr(ident)
    assert MID not in text and UUID not in text and "52:54" not in text
    assert ident == machine_identity(tree(tmp_path / "again"))  # same inputs, same fingerprint


@pytest.mark.parametrize("change", [
    dict(machine_id="fedcba9876543210fedcba9876543210"),
    dict(uuid="4c4c4544-0042-3510-8051-b4c04f4e4333"),
    dict(nics=(("eth0", "pci", "0", "52:54:00:12:34:57"),)),
    dict(nics=(("eth0", "pci", "0", "52:54:00:12:34:56"), ("eth1", "pci", "0", "52:54:00:12:34:99"))),
])
def test_each_input_changes_the_fingerprint(tmp_path, change):
    assert fp(tree(tmp_path / "a")) != fp(tree(tmp_path / "b", **change))


@pytest.mark.parametrize("same", [
    dict(nics=(("enp0s3", "pci", "0", "52:54:00:12:34:56"),)),  # renamed interface
    dict(nics=(("eth0", "pci", "0", "52:54:00:12:34:56"), ("lo", None, "0", "00:00:00:00:00:00"),
               ("br0", None, "3", "aa:bb:cc:dd:ee:ff"), ("veth1", None, "1", "12:34:56:78:9a:bc"))),  # virtual ones
    dict(nics=(("eth0", "pci", "0", "52:54:00:12:34:56"), ("usb0", "pci/usb1/1-1", "0", "00:e0:4c:68:00:01"))),
    dict(uuid="03000200-0400-0500-0006-000700080009", machine_id=MID),  # placeholder UUID: as if absent...
])
def test_what_does_not_count(tmp_path, same):
    if "uuid" in same:
        assert fp(tree(tmp_path / "a", uuid=None)) == fp(tree(tmp_path / "b", **same))
    else:
        assert fp(tree(tmp_path / "a")) == fp(tree(tmp_path / "b", **same))


def test_non_permanent_address_is_replaced_by_the_drivers_permanent_one(tmp_path):
    asked = []

    def perm(name):
        asked.append(name)
        return "52:54:00:12:34:56"

    randomised = tree(tmp_path / "b", nics=(("eth0", "pci", "3", "02:11:22:33:44:55"),))
    assert fp(randomised, perm_addr=perm) == fp(tree(tmp_path / "a"))
    assert asked == ["eth0"]
    # a driver that cannot tell: the interface is left out
    assert fp(randomised, perm_addr=lambda name: None) == fp(tree(tmp_path / "c", nics=()))


def test_machine_id_rules(tmp_path):
    base = fp(tree(tmp_path / "a", uuid=None, nics=()))
    assert fp(tree(tmp_path / "b", machine_id=None, dbus_id=MID, uuid=None, nics=())) == base  # dbus's copy
    # an image waiting for first boot: empty or "uninitialized" counts as absent, without falling back to dbus
    for i, value in enumerate(["", "uninitialized", "0" * 32, "not-hex-at-all-not-hex-at-all-xx"]):
        assert fp(tree(tmp_path / f"c{i}", machine_id=value, dbus_id=MID, uuid=None, nics=())) is None


def test_no_inputs_no_identity(tmp_path):
    ident = machine_identity(tree(tmp_path, machine_id=None, uuid=None, nics=()))
    assert ident.fingerprint is None and ident.inputs == ()
    assert machine_identity(str(tmp_path / "missing")).fingerprint is None


def test_this_machine_is_stable():
    assert machine_identity() == machine_identity()


def test_an_identity_is_a_value():
    """Equal and hashed by its fields (the inputs default to none), immutable."""
    a = Identity(b"\x11" * 32, ("machine-id",))
    assert a == Identity(fingerprint=b"\x11" * 32, inputs=("machine-id",)) and Identity(None) == Identity(None, ())
    assert hash(a) == hash(Identity(b"\x11" * 32, ("machine-id",))) and len({a, Identity(None), Identity(None)}) == 2
    assert a != Identity(b"\x11" * 32) and a != Identity(b"\x22" * 32, ("machine-id",))
    with pytest.raises(AttributeError):
        a.fingerprint = None
    with pytest.raises(AttributeError):
        del a.inputs
    assert a.fingerprint == b"\x11" * 32 and "machine-id" in repr(a)
