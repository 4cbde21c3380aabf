"""Start-up self-tests: a broken primitive stops the daemon before any socket exists.

The daemon runs with a sitecustomize.py on its PYTHONPATH that patches one
pycryptodome primitive to flip an output bit, as a wrong wheel or a patched
library would.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT
from prngd import pool, selftest
from test_pool import PINNED, FakeClock, FakeRandom


def flipped_digest(module: str, cls: str) -> str:
    """A patch making Crypto.Hash.`module`.`cls`.digest() flip bit 0 of its first byte."""
    return f"""\
        from Crypto.Hash import {module}
        _digest = {module}.{cls}.digest

        def digest(self):
            d = bytearray(_digest(self))
            d[0] ^= 1
            return bytes(d)

        {module}.{cls}.digest = digest
        """


# Each patch flips bit 0 of the first output byte of one primitive the pool uses.
PATCHES = {
    "chacha20": ("""\
        from Crypto.Cipher import ChaCha20
        _new = ChaCha20.new

        class Flipped:
            def __init__(self, cipher):
                self._c = cipher
            def seek(self, position):
                self._c.seek(position)
            def encrypt(self, data, output=None):
                if output is None:
                    out = bytearray(self._c.encrypt(data))
                    out[0] ^= 1
                    return bytes(out)
                self._c.encrypt(data, output=output)
                output[0] ^= 1

        ChaCha20.new = lambda **kw: Flipped(_new(**kw))
        """, "self-test failed: RFC 8439 ChaCha20 (section 2.4.2): wrong output"),
    "hmac": (flipped_digest("HMAC", "HMAC"), "self-test failed: NIST CAVP HMAC_DRBG SHA-256: wrong output"),
    "blake2b": (flipped_digest("BLAKE2b", "BLAKE2b_Hash"),
                "self-test failed: pinned output of prngd's ChaCha20 construction: wrong output"),
}


@pytest.mark.parametrize("primitive", list(PATCHES))
def test_a_patched_primitive_refuses_to_start(start_daemon, tmp_path, primitive):
    code, message = PATCHES[primitive]
    patch_dir = tmp_path / "patch"
    patch_dir.mkdir()
    (patch_dir / "sitecustomize.py").write_text(textwrap.dedent(code))
    d = start_daemon(env={"PYTHONPATH": f"{patch_dir}{os.pathsep}{ROOT}"}, ready=False)
    assert d.proc.wait(30) == 1
    d.stop()  # joins the log readers
    assert len(d.lines) == 1, d.log()
    assert d.lines[0].endswith(f"ERROR: {message}; refusing to start"), d.lines[0]
    assert not os.path.lexists(d.socket), "a socket was created"
    assert not os.path.lexists(d.socket + ".admin")


def test_the_unpatched_daemon_logs_its_self_tests(start_daemon):
    d = start_daemon("-d")
    assert "self-tests passed in" in d.wait_for_line("self-tests passed")


def test_self_tests_take_well_under_20_ms():
    best = min(selftest.run() for _ in range(5))
    assert best < 0.020, f"{best * 1000:.1f} ms"


def recompute_pinned_construction() -> bytes:
    """How selftest.PINNED_CONSTRUCTION is made, written independently of selftest.py:
    a chacha20 Pool with tests' FakeRandom(b"pinned") and every clock at 0, fed three samples.
    After an intended change to the construction, print this and re-pin both constants."""
    p = pool.Pool(generator="chacha20", os_random=FakeRandom(b"pinned"), clock=FakeClock(0.0),
                  clocks=lambda: (0, 0, 0))
    p.add("pinned-a", b"0123456789abcdef" * 2, 128)
    p.add("pinned-b", bytes(range(48)), 200)
    p.add("pinned-c", b"uncredited", 0)
    p.reseed()
    return p.read(64)


def test_the_pinned_constant_is_the_construction_and_matches_test_pool():
    assert recompute_pinned_construction() == selftest.PINNED_CONSTRUCTION
    assert selftest.PINNED_CONSTRUCTION.hex() == PINNED[("chacha20", False, "sha256")]


def test_a_primitive_that_raises_is_named(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("no such cipher")

    monkeypatch.setattr(pool, "chacha20_xor_into", broken)
    with pytest.raises(selftest.SelfTestFailure) as e:
        selftest.run()
    assert str(e.value) == "self-test failed: RFC 8439 ChaCha20 (section 2.4.2): ValueError: no such cipher"


def test_the_daemon_loads_pycryptodome_through_ctypes_and_its_self_tests_pass():
    """prngd.cryptobackend: the backend the daemon uses is the one its self-tests check; cffi stays importable."""
    code = """
import subprocess
spawned = []
class Spy(subprocess.Popen):
    def __init__(self, args, *a, **k):
        spawned.append(args[0] if isinstance(args, list) else args)
        super().__init__(args, *a, **k)
subprocess.Popen = Spy
from prngd import cryptobackend
cryptobackend.use_ctypes()
from prngd import selftest
from Crypto.Util import _raw_api
selftest.run()
import importlib.util
print(_raw_api.backend, importlib.util.find_spec("cffi") is not None, ",".join(spawned) or "-")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout.split()
    assert out[0] == "ctypes"
    assert out[1] == str(importlib.util.find_spec("cffi") is not None)  # as importable as before
    assert out[2] == "-"  # pycryptodome's platform.architecture() question answered without `file -b`
