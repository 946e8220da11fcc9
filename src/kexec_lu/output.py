"""Printing results: rich tables on a terminal, plain aligned text when
piped, JSON on request.  Both CLIs use these."""
import json
import sys


def to_terminal():
    return sys.stdout.isatty()


def print_json(obj):
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def hexa(value):
    return "-" if value is None else "0x%x" % value


def print_table(columns, rows, title=None):
    """columns: header strings; rows: lists of str."""
    if to_terminal():
        from rich.console import Console
        from rich.table import Table
        table = Table(title=title, title_justify="left")
        for c in columns:
            table.add_column(c)
        for r in rows:
            table.add_row(*[str(x) for x in r])
        Console().print(table)
        return
    if title:
        print(title)
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) if rows else len(str(c))
              for i, c in enumerate(columns)]
    for line in [columns] + list(rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())


def print_fields(pairs, title=None):
    """A key/value block: [(key, value)]."""
    if to_terminal():
        from rich.console import Console
        from rich.table import Table
        table = Table(title=title, title_justify="left", show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column()
        for k, v in pairs:
            table.add_row(k, str(v))
        Console().print(table)
        return
    if title:
        print(title)
    width = max((len(k) for k, _ in pairs), default=0)
    for k, v in pairs:
        print("%s  %s" % ((k + ":").ljust(width + 1), v))
