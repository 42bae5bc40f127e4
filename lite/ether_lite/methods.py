"""Sensors and actuators: the marks a user puts on methods, and the check
of a call's arguments.

MicroPython functions cannot carry attributes and have no annotations to
read, so the marks live in a table keyed by the function, and argument
types can be given in the decorator: @actuator(on=bool).
"""

# function -> Method. The decorators return the function itself: a
# direct call is unchanged.
marks = {}


class Method:
    """One marked method: its kind, declared arguments (name -> type
    name), unit, period, and the arguments that have a default."""

    def __init__(self, kind, args, unit, period, optional):
        self.kind = kind
        self.args = args
        self.unit = unit
        self.period = period
        self.optional = optional


def check(method, fields):
    """The keyword arguments for a call of `method` with these JSON
    fields; ValueError names the bad field."""
    if not isinstance(fields, dict):
        raise ValueError("arguments must be a JSON object of name: "
                         "value, got %s" % _json_type(fields))
    args = method.args
    # A plain value (sent as {"root": value}) fills a method's only
    # argument.
    if (len(args) == 1 and len(fields) == 1 and "root" in fields
            and "root" not in args):
        for name in args:
            fields = {name: fields["root"]}
    for name in fields:
        if name not in args:
            raise ValueError("unknown argument '%s' (declared: %s)"
                             % (name, ", ".join(args) or "none"))
    kwargs = {}
    for name in args:
        want = args[name]
        if name not in fields:
            if name not in method.optional:
                raise ValueError("missing argument '%s' (%s)"
                                 % (name, want))
            continue
        value = fields[name]
        got = _json_type(value)
        # JSON ints pass as floats; true is not an int
        if got == "int" and want == "float":
            value = float(value)
        elif got != want and want != "any":
            raise ValueError("argument '%s': expected %s, got %s %r"
                             % (name, want, got, value))
        kwargs[name] = value
    return kwargs


def _json_type(value):
    if isinstance(value, bool):
        return "bool"
    return type(value).__name__


def _type_name(name, t):
    if t is None or t is object:
        return "any"
    t = getattr(t, "__name__", t)  # int -> "int"; "int" stays
    if t in ("int", "float", "bool", "str", "any"):
        return t
    raise TypeError("argument '%s': type must be int, float, bool, str or "
                    "'any', got %r" % (name, t))


def _mark(kind, func, types, unit=None, period=None):
    """Mark `func`; without one (the decorator was given arguments), the
    decorator that will."""
    if not callable(func):
        return lambda f: _mark(kind, f, types, unit, period)
    args = {}
    optional = ()
    for name in types:
        args[name] = _type_name(name, types[name])
    if not types and hasattr(func, "__code__"):  # CPython: annotations
        from .compat import signature

        args, optional = signature(func, _type_name)
    marks[func] = Method(kind, args, unit, period, optional)
    return func


def sensor(func=None, period=None, unit=None, **types):
    """Mark a method as a sensor: read every `period` seconds (or only on
    request) and published.

    @sensor                      read on request only
    @sensor(period=1.0, unit="C")
    """
    if period is not None:
        period = float(period)
    return _mark("sensor", func, types, unit, period)


def actuator(func=None, **types):
    """Mark a method as an actuator: called with a message's fields as
    keyword arguments.

    @actuator(on=bool)           types in the decorator: works everywhere
    @actuator                    types from annotations: CPython only
    """
    return _mark("actuator", func, types)


def methods_of(obj):
    """The marked methods of an object's class: {name: Method}."""
    found = {}
    cls = type(obj)
    for name in dir(cls):
        func = getattr(cls, name, None)
        try:
            method = marks.get(func)
        except TypeError:  # unhashable class attribute
            continue
        if method is not None:
            found[name] = method
    return found
