"""What MicroPython has built in and CPython or CircuitPython lack. Only
those import this module, so a MicroPython board does not hold its code.
"""

from time import monotonic_ns, time


def ticks_ms():
    return monotonic_ns() // 1000000


def ticks_add(a, b):
    return a + b


def ticks_diff(a, b):
    return a - b


def time_ns():  # CircuitPython: time() is whole seconds
    return int(time()) * 1000000000


def urandom(n):
    from random import getrandbits

    return bytes([getrandbits(8) for _ in range(n)])


def signature(func, type_name):
    """A method's argument types from its annotations (CPython keeps
    them): ({name: type name}, names of the arguments with a default)."""
    code = func.__code__
    names = code.co_varnames[1:code.co_argcount]  # skip self
    notes = getattr(func, "__annotations__", {})
    args = {}
    for name in names:
        args[name] = type_name(name, notes.get(name))
    n = len(func.__defaults__ or ())
    return args, names[len(names) - n:] if n else ()
