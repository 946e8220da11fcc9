"""`kexec-lu map`: the memory picture is right about where things are."""
import json
import xml.dom.minidom

from xen_public.units import MiB


def test_map_json_names_the_window_and_where_xen2_would_go(host, sim_images):
    res = host.kexec_lu("map", "--json", str(sim_images["4.19"]))
    assert res.returncode == 0, res
    m = json.loads(res.stdout)
    assert m["ram_size"] == 2 << 30
    regions = {r["name"]: r for r in m["regions"]}
    lu, xen = regions["lu-bootmem"], regions["xen"]
    assert m["window"] == {"start": lu["start"], "end": xen["start"] + xen["size"]}
    assert regions["breadcrumb"]["start"] == lu["start"]
    after = {r["name"]: r for r in m["after_update"]}
    assert after["xen#2"]["start"] == xen["start"] and after["xen#2"]["size"] == 3 * MiB
    assert after["boot info"]["start"] == xen["start"] - 4096
    # The simulator's frame-by-frame view covers all of RAM exactly once.
    assert sum(r["size"] for r in m["runs"]) == m["ram_size"]
    assert {"guest", "lu-bootmem", "xen-image", "xenheap", "m2p"} <= {r["kind"] for r in m["runs"]}


def test_map_text_is_to_scale_and_shows_the_markers(host, sim_images):
    res = host.kexec_lu("map", "--width", "64", str(sim_images["4.19"]))
    assert res.returncode == 0, res
    bars = [l for l in res.stdout.splitlines() if l.startswith("|")]
    assert len(bars) == 3 and all(len(b) == 66 for b in bars)
    ram, now, after = (b[1:-1] for b in bars)
    # 64 MiB of bootmem then 3 MiB of Xen: 61-62 cells of B, 2-3 of X.
    assert now[0] == "b" and now.count("X") in (2, 3) and now.rstrip("X").strip("b").strip("B") == ""
    assert after[0] == "b" and "I" in after and after.rstrip(".").endswith("2")
    # xen#2's LU bootmem has a letter of its own, not the running one's B.
    assert after.strip("bI2").strip("N") == "" and "B" not in after
    assert "g" in ram                             # dom0's memory


def test_map_svg_is_a_drawing_of_the_same(host, sim_images, tmp_path):
    svg = tmp_path / "map.svg"
    res = host.kexec_lu("map", "--svg", str(svg), str(sim_images["4.19"]))
    assert res.returncode == 0, res
    doc = xml.dom.minidom.parse(str(svg))
    titles = [t.firstChild.data for t in doc.getElementsByTagName("title")]
    assert any(t.startswith("xen#2 ") for t in titles)
    assert any(t.startswith("breadcrumb ") for t in titles)
    assert any(t.startswith("lu-bootmem ") for t in titles)


def test_map_errors(host, tmp_path):
    res = host.kexec_lu("map", "--svg", str(tmp_path / "no" / "dir" / "x.svg"))
    assert res.returncode == 1 and len(res.stderr.splitlines()) == 1 and "cannot write" in res.stderr
    res = host.kexec_lu("map", str(tmp_path / "missing.gz"))
    assert res.returncode == 1 and "missing.gz" in res.stderr


def test_each_kind_has_a_letter_and_colour_of_its_own():
    from kexec_lu.memmap import KINDS, SVG_COLOURS
    assert set(KINDS) == set(SVG_COLOURS)
    for table in ([k[0] for k in KINDS.values()], [k[1] for k in KINDS.values()], list(SVG_COLOURS.values())):
        assert len(set(table)) == len(table), table


def _legend_and_lists(text):
    """(legend entries, {heading: [(name, start, end)]}) of map's text."""
    lines = text.splitlines()
    at = next(i for i, l in enumerate(lines) if l.startswith("legend: "))
    sections, current = {}, None
    for l in lines[at + 1:]:
        if not l.startswith("  "):
            current = sections.setdefault(l, [])
            continue
        name, span = l[2:20].strip(), l[21:].split()[0]
        current.append((name, *(int(x, 16) for x in span.split("-"))))
    return lines[at][len("legend: "):].split("  "), sections


def test_the_legend_names_only_what_is_drawn_and_each_region_is_listed_once(host, sim_images):
    res = host.kexec_lu("map", "--width", "64", str(sim_images["4.19"]))
    assert res.returncode == 0, res
    legend, sections = _legend_and_lists(res.stdout)
    drawn = set("".join(l[1:-1] for l in res.stdout.splitlines() if l.startswith("|")))
    assert sorted(entry.split(" ", 1)[0] for entry in legend) == sorted(drawn)
    assert list(sections) == ["now:", "after the update:"]
    for rows in sections.values():
        names = [r[0] for r in rows]
        assert len(names) == len(set(names)), rows
    after = {name: (start, end) for name, start, end in sections["after the update:"]}
    # The boot-information page is listed where the plan puts it: the page
    # below xen#2.
    assert after["boot info"] == (after["xen#2"][0] - 4096, after["xen#2"][0])


def test_the_svg_draws_each_byte_once(host, sim_images, tmp_path):
    """No rectangle of a bar overlaps another, and together they cover it."""
    svg = tmp_path / "map.svg"
    assert host.kexec_lu("map", "--svg", str(svg), str(sim_images["4.19"])).returncode == 0
    doc = xml.dom.minidom.parse(str(svg))
    bars = {}
    for r in doc.getElementsByTagName("rect"):
        t = r.getElementsByTagName("title")
        if t:
            name, span = t[0].firstChild.data.rsplit(" ", 1)
            lo, hi = (int(x, 16) for x in span.split("-"))
            bars.setdefault(r.getAttribute("y"), []).append((lo, hi, name))
    assert len(bars) == 3
    for y, spans in bars.items():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), (y, spans)
