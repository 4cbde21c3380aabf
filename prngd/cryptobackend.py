"""The daemon loads pycryptodome through the library's ctypes backend.

pycryptodome reaches its C code through cffi whenever cffi is installed, and
cffi then parses each C declaration with pycparser as the library loads:
about 25 ms of CPU, an eighth of the daemon's start, for no gain it can
measure (a 255-byte read of the chacha20 generator, one keystream refill in
64, costs within 0.1 us the same; an HMAC_DRBG generation a few percent more).
ctypes, the library's other backend, calls the same C code, and the
start-up self-tests (prngd.selftest) check it through the very backend the
daemon uses.  cffi is hidden only while pycryptodome picks its backend, and
stays importable for anything else; if pycryptodome is loaded already, its
choice stands.

Its ctypes backend asks `platform.architecture()` once, before loading its
first library, only to tell Windows from the rest; that spawns `file -b` on
the interpreter, about 5 ms of the start on this daemon's path.  The answer is
known here (prngd runs only on POSIX), so it is filled in beforehand.
Standard library only; imports nothing of prngd.
"""

from __future__ import annotations

import struct
import sys


def use_ctypes() -> None:
    """Load pycryptodome's backend now, as ctypes; call before anything imports Crypto."""
    if "Crypto.Util._raw_api" in sys.modules:
        return
    missing = object()
    cffi = sys.modules.get("cffi", missing)
    sys.modules["cffi"] = None  # `import cffi` raises ImportError: pycryptodome falls back to ctypes
    try:
        import Crypto.Util._raw_api as raw_api
    finally:
        if cffi is missing:
            del sys.modules["cffi"]
        else:
            sys.modules["cffi"] = cffi
    known_architecture(raw_api)


def known_architecture(raw_api) -> None:
    """Answer pycryptodome's one `platform.architecture()` question without the subprocess."""
    cache = getattr(raw_api, "cached_architecture", None)
    if isinstance(cache, list) and not cache and getattr(raw_api, "backend", None) == "ctypes":
        # Only "does the linkage start with Win" is read; an ELF or Mach-O answer is the same here.
        cache[:] = [f"{struct.calcsize('P') * 8}bit", "ELF" if sys.platform.startswith("linux") else ""]
