"""prngd: a userland PRNG daemon speaking the EGD protocol."""

__version__ = "0.3.1"
