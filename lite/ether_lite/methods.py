"""Sensors and actuators: the marks a user puts on methods, and the check
of a call's arguments.

MicroPython functions cannot carry attributes and have no annotations to
read, so the marks live in a table keyed by the function, and argument
types can be given in the decorator: @actuator(on=bool).
"""

# function -> Method. The decorators return the function itself: a
# direct call is unchanged.
marks = {}

TYPE_NAMES = {int: "int", float: "float", bool: "bool", str: "str"}


class Method:
    """One marked method: its kind, declared arguments (name -> type
    name), unit and period."""

    def __init__(self, kind, args, unit=None, period=None, optional=()):
        self.kind = kind
        self.args = args
        self.unit = unit
        self.period = period
        self.optional = optional

    def describe(self):
        """This method's entry in the device schema (arguments with a
        default are listed as optional)."""
        d = {"kind": self.kind, "args": self.args, "unit": self.unit,
             "period": self.period}
        if self.optional:
            d["optional"] = list(self.optional)
        return d

    def check(self, fields):
        """The keyword arguments for a call with these JSON fields;
        ValueError names the bad field."""
        if not isinstance(fields, dict):
            raise ValueError("arguments must be a JSON object of name: "
                             "value, got %s" % _json_type(fields))
        args = self.args
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
            if name in fields:
                kwargs[name] = convert(name, args[name], fields[name])
            elif name not in self.optional:
                raise ValueError("missing argument '%s' (%s)"
                                 % (name, args[name]))
        return kwargs


def convert(name, type_name, value):
    """The value as the declared type, or ValueError naming the argument
    (JSON ints pass as floats)."""
    is_bool = isinstance(value, bool)
    if type_name == "any":
        return value
    if type_name == "bool" and is_bool:
        return value
    if type_name == "int" and isinstance(value, int) and not is_bool:
        return value
    if (type_name == "float" and isinstance(value, (int, float))
            and not is_bool):
        return float(value)
    if type_name == "str" and isinstance(value, str):
        return value
    raise ValueError("argument '%s': expected %s, got %s %r"
                     % (name, type_name, _json_type(value), value))


def _json_type(value):
    if isinstance(value, bool):
        return "bool"
    return type(value).__name__


def _type_name(name, t):
    if t in TYPE_NAMES:
        return TYPE_NAMES[t]
    if t in ("int", "float", "bool", "str", "any"):
        return t
    if t is None or t is object:
        return "any"
    raise TypeError("argument '%s': type must be int, float, bool, str or "
                    "'any', got %r" % (name, t))


def _from_signature(func):
    """Argument types from annotations where the interpreter keeps them
    (CPython); else nothing."""
    code = getattr(func, "__code__", None)
    if code is None:  # MicroPython, CircuitPython: types in the decorator
        return {}, ()
    names = code.co_varnames[1:code.co_argcount]  # skip self
    notes = getattr(func, "__annotations__", {})
    args = {}
    for name in names:
        args[name] = _type_name(name, notes.get(name))
    defaults = getattr(func, "__defaults__", None) or ()
    return args, names[len(names) - len(defaults):] if defaults else ()


def _mark(func, kind, types, unit=None, period=None):
    if types:
        args = {}
        for name in types:
            args[name] = _type_name(name, types[name])
        optional = ()
    else:
        args, optional = _from_signature(func)
    marks[func] = Method(kind, args, unit, period, optional)
    return func


def sensor(func=None, period=None, unit=None, **types):
    """Mark a method as a sensor: read every `period` seconds (or only on
    request) and published.

    @sensor                      read on request only
    @sensor(period=1.0, unit="C")
    """
    if callable(func):
        return _mark(func, "sensor", types)
    if period is not None:
        period = float(period)
    return lambda f: _mark(f, "sensor", types, unit, period)


def actuator(func=None, **types):
    """Mark a method as an actuator: called with a message's fields as
    keyword arguments.

    @actuator(on=bool)           types in the decorator: works everywhere
    @actuator                    types from annotations: CPython only
    """
    if callable(func):
        return _mark(func, "actuator", types)
    return lambda f: _mark(f, "actuator", types)


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
