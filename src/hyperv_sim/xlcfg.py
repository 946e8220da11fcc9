"""xl-style domain configuration files for `hyperv-sim create`.

The syntax is xl.cfg's (tools/libs/util/libxlu_cfg_*): `key = value`
statements ended by a new line or ';', '#' comments, and values that are
integers, quoted strings, or one-level lists of those.  There are no
expressions: xl rejects them and so do we, so nothing here evaluates Python.

Every error is a ConfigError with one line naming `source:line`.
"""
import dataclasses
import difflib
import os
import re
import stat
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

from xen_public.errors import FormatError
from xen_public.units import KiB, MiB, format_size, parse_size

from .errors import HypervSimError
from .guest import RATE_FORMS, parse_workload_rate

MAX_MEMORY = 16 << 40           # the largest host `hyperv-sim boot` makes


class ConfigError(HypervSimError):
    """A domain configuration (file or command-line flags) we cannot use."""


@dataclass
class DomainConfig:
    name: str
    type: str = "pv"
    memory: int = 512 * MiB            # bytes
    vcpus: int = 1
    event_channel_abi: str = "2-level"
    grant_version: int = 1
    pci: list = field(default_factory=list)   # normalised "dddd:bb:dd.f"
    workload: str = "busy"
    workload_pages: int = 16
    workload_rate: Optional[int] = None         # steps/s per vCPU, 0 max; None: the host's default
    seed: Optional[int] = None
    ignored: dict = field(default_factory=dict)  # accepted xl keys the simulator has no use for

    def to_request(self):
        """The arguments of the toolstack's "create" operation."""
        return {"name": self.name, "type": self.type, "memory": self.memory,
                "vcpus": self.vcpus, "event_channel_abi": self.event_channel_abi,
                "grant_version": self.grant_version, "pci": list(self.pci),
                "workload": self.workload, "workload_pages": self.workload_pages,
                "workload_rate": self.workload_rate, "seed": self.seed}


# ------------------------------------------------------------ tokenizer

class _Tok(NamedTuple):
    kind: str       # word int str nl eof char, or the punctuation itself: = [ ] , ;
    value: object
    line: int


_SKIP = re.compile(r"[ \t\r\f\v]+|#[^\n]*")
# Greedy, so that '1G' or '1.5' is one bad number rather than a number and a stray word.
_NUMBER = re.compile(r"[0-9][A-Za-z0-9_.]*")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}


def _tokens(text, error):
    """Lazily, so that errors come out in the order the parser meets them."""
    pos, line = 0, 1
    while True:
        m = _SKIP.match(text, pos)
        if m:
            pos = m.end()
            continue
        if pos >= len(text):
            yield _Tok("eof", None, line)
            return
        ch = text[pos]
        if ch == "\n":
            yield _Tok("nl", None, line)
            line += 1
            pos += 1
        elif ch in "=[],;":
            yield _Tok(ch, ch, line)
            pos += 1
        elif ch in "\"'":
            value, pos = _string(text, pos, line, error)
            yield _Tok("str", value, line)
        elif _NUMBER.match(text, pos):
            m = _NUMBER.match(text, pos)
            yield _Tok("int", _number(m.group(), line, error), line)
            pos = m.end()
        elif _WORD.match(text, pos):
            m = _WORD.match(text, pos)
            yield _Tok("word", m.group(), line)
            pos = m.end()
        else:
            yield _Tok("char", ch, line)
            pos += 1


def _string(text, pos, line, error):
    quote, out, pos = text[pos], [], pos + 1
    while pos < len(text) and text[pos] not in (quote, "\n"):
        ch = text[pos]
        if ch == "\\" and pos + 1 < len(text) and text[pos + 1] != "\n":
            esc = text[pos + 1]
            if esc not in _ESCAPES:
                shown = esc if esc.isprintable() else ascii(esc)[1:-1]
                error(line, "unknown escape '\\%s' in a string (use \\\\ for a backslash)" % shown)
            out.append(_ESCAPES[esc])
            pos += 2
        elif ch == "\\":
            break               # a backslash before the end of the line or file
        else:
            out.append(ch)
            pos += 1
    if pos >= len(text) or text[pos] != quote:
        error(line, "unterminated string")
    return "".join(out), pos + 1


def _number(text, line, error):
    if len(text) > 100:         # also keeps int() clear of Python's digit limit
        error(line, "number too long")
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
        return int(text, 16)
    if re.fullmatch(r"[0-9]+", text):
        if len(text) > 1 and text[0] == "0":
            # xl reads numbers with strtol(..., 0): 010 would be 8 there.
            error(line, "number '%s' has a leading zero (xl would read it as octal)" % text)
        return int(text)
    hint = ""
    if re.fullmatch(r"[0-9]+[KMGTkmgt]([iI]?[bB])?", text):
        hint = ' (quote a size with a unit: "%s")' % text
    error(line, "invalid number '%s'%s" % (text, hint))


def _describe(tok):
    if tok.kind == "word":
        return "bare word '%s'" % tok.value
    if tok.kind == "char":
        return repr(tok.value)
    return {"int": "a number", "str": "a string", "nl": "the end of the line",
            "eof": "the end of the file"}.get(tok.kind, "'%s'" % tok.kind)


# ------------------------------------------------------------ parser

class _Value(NamedTuple):
    value: object   # int, str, or a list of _Value
    line: int

    def plain(self):
        return [v.value for v in self.value] if isinstance(self.value, list) else self.value


class _Parser:
    def __init__(self, text, source):
        self.source = source
        self._toks = _tokens(text, self.error)
        self.advance()

    def error(self, line, message):
        raise ConfigError("%s:%d: %s" % (self.source, line, message))

    def advance(self):
        self.tok = next(self._toks)

    def statements(self):
        """Yield (key, _Value) in file order."""
        while True:
            tok = self.tok
            if tok.kind in ("nl", ";"):
                self.advance()
                continue
            if tok.kind == "eof":
                return
            if tok.kind != "word":
                self.error(tok.line, "expected a key at the start of a statement, found %s"
                           % _describe(tok))
            key = tok.value
            self.advance()
            if self.tok.kind != "=":
                self.error(self.tok.line, "expected '=' after '%s', found %s"
                           % (key, _describe(self.tok)))
            self.advance()
            value = self.value(key)
            if self.tok.kind not in ("nl", ";", "eof"):
                more = " (xl takes no expressions)" if self.tok.kind == "char" else ""
                self.error(self.tok.line, "expected a new line or ';' after the value of '%s', "
                           "found %s%s" % (key, _describe(self.tok), more))
            yield key, value

    def atom(self, what):
        tok = self.tok
        if tok.kind in ("int", "str"):
            self.advance()
            return _Value(tok.value, tok.line)
        if tok.kind == "word":
            self.error(tok.line, "expected %s, found %s (quote strings: \"%s\")"
                       % (what, _describe(tok), tok.value))
        if tok.kind in ("nl", ";", "eof") and what == "a value after '='":
            self.error(tok.line, "expected a value after '='")
        self.error(tok.line, "expected %s, found %s" % (what, _describe(tok)))

    def value(self, key):
        if self.tok.kind != "[":
            return self.atom("a value after '='")
        opened, items = self.tok.line, []
        self.advance()
        while True:
            self.skip_newlines(key, opened)
            if self.tok.kind == "]":
                break
            if self.tok.kind == "[":
                self.error(self.tok.line, "lists cannot be nested")
            items.append(self.atom("a list item or ']'"))
            self.skip_newlines(key, opened)
            if self.tok.kind == "]":
                break
            if self.tok.kind != ",":
                self.error(self.tok.line, "expected ',' or ']' in the list for '%s', found %s"
                           % (key, _describe(self.tok)))
            self.advance()
        self.advance()
        return _Value(items, opened)

    def skip_newlines(self, key, opened):
        while self.tok.kind == "nl":
            self.advance()
        if self.tok.kind == "eof":
            self.error(opened, "unterminated list for '%s' (no closing ']')" % key)


# ------------------------------------------------------------ validation

class _Invalid(Exception):
    """A bad value; the caller says where (file:line 'key' or --flag)."""

    def __init__(self, message, index=None):
        super().__init__(message)
        self.index = index          # which list item, for its line


_KIND = {int: "an integer", str: "a string", list: "a list", tuple: "a list"}


def _kind(value):
    return _KIND.get(type(value), type(value).__name__)


def _expect(value, typ):
    if type(value) is not typ:      # exact: a bool is not a vCPU count
        raise _Invalid("must be %s, not %s" % (_KIND[typ], _kind(value)))
    return value


def _int_range(lo, hi):
    def check(value):
        if not lo <= _expect(value, int) <= hi:
            raise _Invalid("must be from %d to %d, not %d" % (lo, hi, value))
        return value
    return check


def _rate(value):
    """Steps a second: a number, or a string such as "100k", "2M", "max"."""
    if value is None:
        return None
    if type(value) is int:
        value = str(value)
    try:
        return parse_workload_rate(_expect(value, str))
    except ValueError:
        raise _Invalid("must be %s, not %r" % (RATE_FORMS, value))


def _choice(*names, aliases=None):
    accepted = dict({n: n for n in names}, **(aliases or {}))
    shown = ", ".join('"%s"' % n for n in names[:-1]) + ' or "%s"' % names[-1]

    def check(value):
        if _expect(value, str) not in accepted:
            raise _Invalid("must be %s, not %r" % (shown, value))
        return accepted[value]
    return check


def _name(value):
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", _expect(value, str)):
        raise _Invalid("must be 1 to 64 letters, digits and _.:- starting with a letter or "
                       "digit, not %r" % value)
    if value.isdigit():
        raise _Invalid("must not be all digits, not %r: xl reads those as a domain id" % value)
    return value


def _memory(int_unit):
    """xl's memory= counts MiB; a command-line flag already holds bytes."""
    def check(value):
        if type(value) is int:
            nbytes = value * int_unit
        elif type(value) is str:
            try:
                nbytes = parse_size(value, default_unit="M", what="memory")
            except (FormatError, ValueError):   # ValueError: parse_size's int(x, 0) on '010'
                raise _Invalid("must be a number of MiB or a size with a unit K, M, G or T "
                               "(e.g. \"1G\"), not %r" % value)
        else:
            raise _Invalid("must be an integer (MiB) or a string such as \"1G\", not %s"
                           % _kind(value))
        if nbytes < 16 * MiB:
            raise _Invalid("must be at least 16M, not %s" % format_size(nbytes))
        if nbytes > MAX_MEMORY:
            raise _Invalid("must be at most 16T (the largest host), not %s" % format_size(nbytes))
        if nbytes % (4 * KiB):
            raise _Invalid("must be a multiple of 4K, not %s" % format_size(nbytes))
        return nbytes
    return check


_BDF = re.compile(r"(?:([0-9a-fA-F]+):)?([0-9a-fA-F]+):([0-9a-fA-F]+)\.([0-9a-fA-F]+)")
_PCI_OPTION = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*=[^,]*")


def _pci(value):
    if not isinstance(value, (list, tuple)):
        raise _Invalid("must be a list, not %s" % _kind(value))
    devices = []
    for index, spec in enumerate(value):
        if type(spec) is not str:
            raise _Invalid("entries must be strings, not %s" % _kind(spec), index)
        bdf, *options = spec.split(",")
        m = _BDF.fullmatch(bdf.strip())
        if not m or not all(_PCI_OPTION.fullmatch(o.strip()) for o in options):
            raise _Invalid("entry %r is not a PCI device: expected [DDDD:]BB:DD.F in hex, "
                           "then optional ,key=value" % spec, index)
        fields = [int(f or "0", 16) for f in m.groups()]
        for what, number, top in zip(("domain", "bus", "device", "function"), fields,
                                     (0xffff, 0xff, 0x1f, 7)):
            if number > top:
                raise _Invalid("entry %r: PCI %s 0x%x is out of range (at most 0x%x)"
                               % (spec, what, number, top), index)
        device = "%04x:%02x:%02x.%x" % tuple(fields)
        if device in devices:
            raise _Invalid("lists %s twice" % device, index)
        devices.append(device)
    return devices


# Keys that become DomainConfig fields, with their checks.  memory differs
# between a file (MiB) and a flag (bytes); see _FLAG_CHECKS.
_CHECKS = {
    "name": _name,
    "type": _choice("pv", "pvh", "hvm"),
    "memory": _memory(MiB),
    "vcpus": _int_range(1, 128),
    "event_channel_abi": _choice("2-level", "fifo", aliases={"2l": "2-level"}),
    "grant_version": _int_range(1, 2),
    "pci": _pci,
    "workload": _choice("busy", "idle"),
    "workload_pages": _int_range(1, 4096),
    "workload_rate": _rate,
    "seed": _int_range(0, 2**64 - 1),
}
_FLAG_CHECKS = dict(_CHECKS, memory=_memory(1))
MAX_REQUEST_PCI = 64


def check_request(request):
    """A toolstack `create` request (DomainConfig.to_request()'s keys, memory
    in bytes), checked as strictly as a command-line flag: the hypervisor's
    side of the same rules.  -> the checked fields; ValueError naming the
    first bad one."""
    unknown = sorted(set(request) - set(_FLAG_CHECKS))
    if unknown:
        raise ValueError("unknown create field%s %s" % ("s" if len(unknown) > 1 else "",
                                                        ", ".join(map(repr, unknown))))
    for key in ("name", "type", "memory", "vcpus"):
        if key not in request:
            raise ValueError("create needs %r" % key)
    if isinstance(request.get("pci"), list) and len(request["pci"]) > MAX_REQUEST_PCI:
        raise ValueError("pci: at most %d devices" % MAX_REQUEST_PCI)
    out = {}
    for key, value in request.items():
        if value is None and key == "seed":
            continue
        try:
            out[key] = _FLAG_CHECKS[key](value)
        except _Invalid as e:
            raise ValueError("%s %s" % (key, e)) from None
    return out
# xl spellings folded into the fields above once the whole file is read.
_LEGACY = {
    "builder": _choice("hvm", "generic"),
    "maxmem": _memory(MiB),
    "max_grant_version": _int_range(1, 2),
}
_IGNORED = ("on_poweroff", "on_reboot", "on_crash", "kernel", "ramdisk", "extra", "cmdline",
            "disk", "vif", "uuid")
_KNOWN = sorted(list(_CHECKS) + list(_LEGACY) + list(_IGNORED))
_BUILDER_TYPE = {"hvm": "hvm", "generic": "pv"}


def parse_config(text, source="<config>", name=None):
    """Parse the text of an xl-style domain config into a DomainConfig."""
    parser = _Parser(text, source)
    seen = {}
    for key, value in parser.statements():
        if key not in _KNOWN:
            close = difflib.get_close_matches(key, _KNOWN, n=1)
            parser.error(value.line, "unknown key '%s'%s"
                         % (key, " (did you mean '%s'?)" % close[0] if close else ""))
        if key in seen:
            parser.error(value.line, "duplicate key '%s' (already set on line %d)"
                         % (key, seen[key].line))
        seen[key] = value

    values, ignored = {}, {}
    for key, value in seen.items():
        if key in _IGNORED:
            ignored[key] = value.plain()
            continue
        try:
            values[key] = {**_CHECKS, **_LEGACY}[key](value.plain())
        except _Invalid as e:
            line = value.value[e.index].line if e.index is not None else value.line
            parser.error(line, "'%s' %s" % (key, e))

    def later(*keys):
        return max(seen[k].line for k in keys)

    if "builder" in values:
        builder_type = _BUILDER_TYPE[values.pop("builder")]
        if values.setdefault("type", builder_type) != builder_type:
            parser.error(later("builder", "type"), "'builder = \"%s\"' means type \"%s\", but "
                         "'type' is \"%s\"" % (seen["builder"].value, builder_type, values["type"]))
    if "max_grant_version" in values:
        version = values.pop("max_grant_version")
        if values.setdefault("grant_version", version) != version:
            parser.error(later("grant_version", "max_grant_version"),
                         "'grant_version' (%d) and 'max_grant_version' (%d) disagree"
                         % (values["grant_version"], version))
    if "maxmem" in values:
        maxmem, memory = values.pop("maxmem"), values.get("memory", DomainConfig.memory)
        if maxmem != memory:
            parser.error(seen["maxmem"].line, "'maxmem' (%s) must equal 'memory' (%s): the "
                         "simulator has no ballooning" % (format_size(maxmem), format_size(memory)))
    if name is not None:
        values.setdefault("name", name)     # a name on the command line will override
    if "name" not in values:
        raise ConfigError("%s: missing required key 'name'" % source)
    return DomainConfig(**values, ignored=ignored)


MAX_CONFIG_SIZE = 1 << 20      # xl configs are a few hundred bytes


def _read_text(source):
    """A regular file of at most MAX_CONFIG_SIZE bytes, as UTF-8 text."""
    fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError("cannot read config file %s: not a regular file" % source)
        os.set_blocking(fd, True)
        raw = f.read(MAX_CONFIG_SIZE + 1)
    if len(raw) > MAX_CONFIG_SIZE:
        raise ConfigError("config file %s is larger than %d KiB: not an xl config"
                          % (source, MAX_CONFIG_SIZE >> 10))
    return raw.decode("utf-8-sig")


def load_config(path, name=None):
    """Read and parse a config file; errors name it as given.  name: the
    one given on the command line, which makes the file's optional."""
    source = os.fspath(path)
    try:
        text = _read_text(source)
    except OSError as e:
        raise ConfigError("cannot read config file %s: %s" % (source, e.strerror or e))
    except UnicodeDecodeError as e:
        raise ConfigError("cannot read config file %s: not UTF-8 text (byte 0x%02x at offset %d)"
                          % (source, e.object[e.start], e.start))
    return parse_config(text, source, name)


def looks_like_config(word):
    """Whether create's operand names a config file (as `xl create FILE`
    takes it) rather than a domain: an existing file, a path, or *.cfg."""
    return "/" in word or word.endswith(".cfg") or os.path.isfile(word)


def merge_flags(cfg, **flags):
    """Apply command-line flags (field name -> value, None = not given) over
    cfg, or build a config from the flags alone when cfg is None.  Flag values
    are in DomainConfig's units (memory in bytes; a string like "1G" also
    works) and are checked like config values."""
    unknown = sorted(set(flags) - set(_FLAG_CHECKS))
    if unknown:
        raise TypeError("merge_flags: unknown flags %s" % ", ".join(unknown))
    given = {}
    for key, value in flags.items():
        if value is None:
            continue
        try:
            given[key] = _FLAG_CHECKS[key](value)
        except _Invalid as e:
            # The name is create's operand, not an option.
            raise ConfigError("%s %s" % ("the name" if key == "name" else "--" + key.replace("_", "-"), e))
    if cfg is None:
        if "name" not in given:
            raise ConfigError("no domain name: give one on the command line or as name = \"...\" "
                              "in a config file")
        return DomainConfig(**given)
    return dataclasses.replace(cfg, **{"pci": list(cfg.pci), "ignored": dict(cfg.ignored), **given})
