"""Sizes and addresses as users and Xen command lines write them."""
from .errors import FormatError

_UNITS = {"": None, "B": 0, "K": 10, "M": 20, "G": 30, "T": 40}
_DECIMAL, _HEX = frozenset("0123456789"), frozenset("0123456789abcdefABCDEF")
_SUFFIXES = ("", "b", "B", "ib", "iB", "Ib", "IB")

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def parse_size(text, default_unit="B", what="size"):
    """'64M' -> 67108864.  A number without a unit is in default_unit
    (Xen's own parser defaults to K, xl's memory= to M)."""
    split = _split_size(str(text).strip())
    if split is None:
        raise FormatError("invalid %s %r: expected a number with an optional unit "
                           "K, M, G or T (e.g. 64M)" % (what, text))
    number, unit = split
    return number << _UNITS[unit.upper() or default_unit.upper()]


def _split_size(s):
    """'0x40MiB' -> (64, 'M'); None unless it is digits (decimal, or hex
    after 0x), an optional unit letter, an optional 'B' or 'iB'.  By hand:
    the hypervisor parses sizes at every start and `re` costs milliseconds."""
    hexadecimal = s[:2] in ("0x", "0X")
    digits = _HEX if hexadecimal else _DECIMAL
    start = end = 2 if hexadecimal else 0
    while end < len(s) and s[end] in digits:
        end += 1
    if end == start:
        return None
    rest, unit = s[end:], ""
    if rest[:1] and rest[0] in "bBkKmMgGtT":
        unit, rest = rest[0], rest[1:]
    if rest not in _SUFFIXES:
        return None
    return int(s[start:end], 16 if hexadecimal else 10), unit


def parse_address(text, what="address"):
    """'0x1000' or '4096' -> int; an address, so no units."""
    try:
        value = int(str(text).strip(), 0)
    except ValueError:
        raise FormatError("invalid %s %r: expected a number such as 0x100000" % (what, text))
    if value < 0:
        raise FormatError("invalid %s %r: must not be negative" % (what, text))
    if value >= 1 << 64:
        raise FormatError("invalid %s %r: does not fit in 64 bits" % (what, text))
    return value


def format_size(nbytes):
    """Exact when it can be: 67108864 -> '64M', 4097 -> '4097B'."""
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if nbytes and nbytes % (1 << shift) == 0:
            return "%d%s" % (nbytes >> shift, unit)
    return "%dB" % nbytes


def human_size(nbytes):
    """Rounded, for tables: 3.6 MiB."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return ("%d %s" % (value, unit)) if unit == "B" else ("%.1f %s" % (value, unit))
        value /= 1024
    return "%.1f TiB" % value


def align_down(value, align):
    return value - (value % align)


def align_up(value, align):
    return align_down(value + align - 1, align)


def count(n, one, many=None):
    """"1 entry", "2 entries", "0 frames": a count with its noun agreeing."""
    return "%d %s" % (n, one if n == 1 else many or one + "s")
