"""Sizes and addresses as users and Xen command lines write them."""
import re

from .errors import KexecLuError

_UNITS = {"": None, "B": 0, "K": 10, "M": 20, "G": 30, "T": 40}
_SIZE_RE = re.compile(r"^(0[xX][0-9a-fA-F]+|[0-9]+)([bBkKmMgGtT]?)(?:[iI]?[bB])?$")

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def parse_size(text, default_unit="B", what="size"):
    """'64M' -> 67108864.  A number without a unit is in default_unit
    (Xen's own parser defaults to K, xl's memory= to M)."""
    m = _SIZE_RE.match(str(text).strip())
    if not m:
        raise KexecLuError("invalid %s %r: expected a number with an optional unit "
                           "K, M, G or T (e.g. 64M)" % (what, text))
    digits = m.group(1)
    number = int(digits, 16) if digits[:2].lower() == "0x" else int(digits, 10)
    unit = m.group(2).upper() or default_unit.upper()
    return number << _UNITS[unit]


def parse_address(text, what="address"):
    """'0x1000' or '4096' -> int; an address, so no units."""
    try:
        value = int(str(text).strip(), 0)
    except ValueError:
        raise KexecLuError("invalid %s %r: expected a number such as 0x100000" % (what, text))
    if value < 0:
        raise KexecLuError("invalid %s %r: must not be negative" % (what, text))
    if value >= 1 << 64:
        raise KexecLuError("invalid %s %r: does not fit in 64 bits" % (what, text))
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
