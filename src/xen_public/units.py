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
    """A size as Xen's and xl's options take it, to be typed back:
    67108864 -> '64M', 4097 -> '4097B'."""
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if nbytes and nbytes % (1 << shift) == 0:
            return "%d%s" % (nbytes >> shift, unit)
    return "%dB" % nbytes


def size_text(nbytes):
    """A size for a person, the one way both CLIs write it: '64 MiB' when
    whole in its unit, else '3.6 MiB'; '512 B'.  (JSON has bytes.)"""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            if nbytes % (1 << shift) == 0:
                return "%d %s" % (nbytes >> shift, unit)
            return "%.1f %s" % (nbytes / (1 << shift), unit)
    return "%d B" % nbytes


# Machine addresses: 12 hex digits cover 256 TiB, so a column of them lines up.
ADDR_DIGITS = 12


def addr_text(addr):
    """A machine address, the one way both CLIs write it: 0x0000fac00000."""
    return "0x%0*x" % (ADDR_DIGITS, addr)


def align_down(value, align):
    return value - (value % align)


def align_up(value, align):
    return align_down(value + align - 1, align)


def count(n, one, many=None):
    """"1 entry", "2 entries", "0 frames": a count with its noun agreeing."""
    return "%d %s" % (n, one if n == 1 else many or one + "s")
