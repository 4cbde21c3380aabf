"""Value: the base of prngd's small immutable records (requests, addresses, seeds, users).

What a frozen dataclass gives, written out once: equal and hashed by the
fields named in `__slots__`, a repr naming them, and no assignment or
deletion after `__init__` (which sets them with `object.__setattr__`).
Decorating a dozen dataclasses cost about 5 ms of every start before its
first byte (issue 22).  Standard library only; imports nothing.
"""

from __future__ import annotations


class Value:
    __slots__ = ()

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> tuple:
        return tuple(getattr(self, f) for f in self.__slots__)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{f}={getattr(self, f)!r}' for f in self.__slots__)})"
