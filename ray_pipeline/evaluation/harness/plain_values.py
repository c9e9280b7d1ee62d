"""Plain values as JSON text: how a solution's outputs leave the sandbox as data.

The evalplus runner (``evalplus_run.py``, inside the sandbox) writes each output
with :func:`dumps`; the executor (outside, in a process that never runs model
code) reads it back with :func:`loads` and compares it with the expected
output. Only plain values cross: ``None``, ``bool``, ``int``, ``float``,
``complex``, ``str``, ``bytes``, and ``list``, ``tuple``, ``dict``, ``set``,
``frozenset`` of them. Types are kept exactly (a tuple stays a tuple, a set a
set, ``1`` and ``1.0`` and ``True`` stay apart), because evalplus's comparison
depends on them (``out == exp``, ``type(out) == type(exp)``).

Anything else is refused with :class:`NotPlain`: an object with its own
``__eq__`` never reaches the comparison, so it cannot vouch for itself.
Instances of subclasses of the plain types (an ``int`` subclass, a
``Counter``, a ``namedtuple``) and NumPy scalars are taken as the plain value
they hold; the copy is a new plain object, whatever methods the original had.

The JSON form: ``null``, ``true``/``false``, numbers (ints of more than
:data:`MAX_JSON_INT_BITS` bits as ``{"i": hex}``; ``NaN`` and ``Infinity`` as
Python's ``json`` writes them), strings and arrays (lists) stand for
themselves; every other value is an object with one key: ``{"t": [...]}``
tuple, ``{"s": [...]}`` set, ``{"f": [...]}`` frozenset, ``{"d": [[k, v], ...]}``
dict (its keys keep their types), ``{"c": [re, im]}`` complex, ``{"b": hex}``
bytes, ``{"i": hex}`` big int.

:func:`loads` accepts nothing else: an unknown tag, a malformed body or a
value nested deeper than :data:`MAX_DEPTH` is :class:`NotPlain`, never a guess.

Standard library only: the runner imports this file by path inside the sandbox.
"""

import json

#: ints wider than this go as hex text (CPython refuses decimal text of more than 4,300 digits)
MAX_JSON_INT_BITS = 4096
#: how deeply values may nest, both ways
MAX_DEPTH = 200
#: element types a list may hold to go as it is, with no look at each element (JSON's own scalars)
_SCALARS = frozenset((str, float, bool, type(None)))
_SCALARS_AND_INTS = _SCALARS | {int}


class NotPlain(ValueError):
    """A value that is not plain data, or text that is not an encoding of one."""


def _numpy_scalar(value):
    """The Python scalar a NumPy scalar holds, else None (NumPy is looked at only if the program loaded it)."""
    module = type(value).__module__
    if module == "numpy" or module.startswith("numpy."):
        item = getattr(value, "item", None)
        shape = getattr(value, "shape", None)
        if callable(item) and shape == ():
            return item()
    return None


def to_plain(value, depth=0):
    """``value`` as JSON-ready data (see the module docstring); NotPlain if it is not plain."""
    if depth > MAX_DEPTH:
        raise NotPlain(f"nested deeper than {MAX_DEPTH}")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return value if value.bit_length() <= MAX_JSON_INT_BITS else {"i": hex(value)}
    if kind is float:
        return value
    if kind is list:
        return _elements(value, depth)
    if kind is tuple:
        return {"t": _elements(value, depth)}
    if kind is dict:
        return {"d": [[to_plain(k, depth + 1), to_plain(v, depth + 1)] for k, v in value.items()]}
    if kind is set:
        return {"s": _elements(value, depth)}
    if kind is frozenset:
        return {"f": _elements(value, depth)}
    if kind is complex:
        return {"c": [value.real, value.imag]}
    if kind is bytes:
        return {"b": value.hex()}
    # not a plain type itself: a subclass of one is copied into the plain type, a NumPy scalar unwrapped
    for base in (bool, int, float, complex, str, bytes):
        if isinstance(value, base):
            return to_plain(base(value), depth)
    for base in (list, tuple, set, frozenset):
        if isinstance(value, base):
            return to_plain(base(iter(value)), depth)
    if isinstance(value, dict):
        return to_plain(dict(value.items()), depth)
    scalar = _numpy_scalar(value)
    if scalar is not None:
        return to_plain(scalar, depth)
    raise NotPlain(f"a {kind.__module__}.{kind.__qualname__} is not plain data")


def _elements(values, depth):
    """A container's elements as a JSON list; one of plain scalars and small ints goes as it is (fast)."""
    kinds = set(map(type, values))
    if kinds <= _SCALARS or (kinds <= _SCALARS_AND_INTS and _small_ints(values, kinds)):
        return values if type(values) is list else list(values)
    return [to_plain(v, depth + 1) for v in values]


_INT_BOUND = 1 << MAX_JSON_INT_BITS


def _small_ints(values, kinds):
    """Whether every int among ``values`` (JSON scalars and ints) fits in MAX_JSON_INT_BITS bits."""
    ints = values if kinds == {int} else [v for v in values if type(v) is int]
    return not ints or (-_INT_BOUND < min(ints) and max(ints) < _INT_BOUND)


def dumps(value):
    """One line of JSON text for a plain value."""
    return json.dumps(to_plain(value), ensure_ascii=True, allow_nan=True, separators=(",", ":"))


def from_plain(data, depth=0):
    """The value that :func:`to_plain` gave ``data`` for; NotPlain if ``data`` is not such a form."""
    if depth > MAX_DEPTH:
        raise NotPlain(f"nested deeper than {MAX_DEPTH}")
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return _decoded(data, depth)
    if kind is not dict or len(data) != 1:
        raise NotPlain(f"not an encoded value: {type(data).__name__}")
    (tag, body), = data.items()
    try:
        if tag == "t":
            return tuple(_decoded(_list(body), depth))
        if tag == "s":
            return set(_decoded(_list(body), depth))
        if tag == "f":
            return frozenset(_decoded(_list(body), depth))
        if tag == "d":
            pairs = _list(body)
            if any(type(p) is not list or len(p) != 2 for p in pairs):
                raise NotPlain("a dict's items must be [key, value] pairs")
            return {from_plain(k, depth + 1): from_plain(v, depth + 1) for k, v in pairs}
        if tag == "c":
            parts = _list(body)
            if len(parts) != 2 or any(type(p) not in (int, float) for p in parts):
                raise NotPlain("a complex must be [real, imag]")
            return complex(parts[0], parts[1])
        if tag == "b" and type(body) is str:
            return bytes.fromhex(body)
        if tag == "i" and type(body) is str:
            return int(body, 16)
    except TypeError as exc:  # unhashable set member or dict key
        raise NotPlain(str(exc)) from None
    raise NotPlain(f"unknown tag {tag!r}")


def _decoded(items, depth):
    """A JSON list's values; one of JSON scalars only is taken as it is (fast)."""
    if set(map(type, items)) <= _SCALARS_AND_INTS:
        return items
    return [from_plain(v, depth + 1) for v in items]


def _list(body):
    if type(body) is not list:
        raise NotPlain("a tagged value's body must be a list")
    return body


def loads(text):
    """The plain value a line of :func:`dumps` encodes; NotPlain for anything else."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise NotPlain(f"not JSON: {exc}") from None
    try:
        return from_plain(data)
    except RecursionError:
        raise NotPlain(f"nested deeper than {MAX_DEPTH}") from None
