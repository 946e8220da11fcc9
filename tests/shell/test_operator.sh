#!/usr/bin/env bash
# What an operator reads and sees: the man pages render and lint clean, the
# memory map draws (text and SVG), dmesg shows an update's phases.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

echo "== man pages"
for page in "$repo"/man/*.[0-9]; do
    man -l "$page" > "$work/page.txt" 2> "$work/man.err" || fail "man -l $page failed"
    [ -s "$work/man.err" ] && fail "man -l $page complained: $(cat "$work/man.err")"
    grep -q "SYNOPSIS\|DESCRIPTION" "$work/page.txt" || fail "$page renders without sections"
    out=$(mandoc -Tlint -W warning "$page" 2>&1) || fail "mandoc -Tlint $page: $out"
    [ -z "$out" ] || fail "mandoc -Tlint $page: $out"
done

echo "== map"
hyperv-sim mkimage --xen-version 4.18 -o "$work/xen-4.18.gz" >/dev/null
hyperv-sim mkimage --xen-version 4.19 -o "$work/xen-4.19.gz" >/dev/null
hyperv-sim boot --memory 2G --cmdline "liveupdate=32M dom0_mem=256M" "$work/xen-4.18.gz" >/dev/null
kexec-lu map --width 40 --svg "$work/map.svg" "$work/xen-4.19.gz" > "$work/map.txt" || fail "map failed"
[ "$(grep -c '^|' "$work/map.txt")" = 3 ] || fail "map did not draw three bars: $(cat "$work/map.txt")"
grep -q '^legend: ' "$work/map.txt" || fail "map has no legend"
python3 -c 'import sys, xml.dom.minidom as m; d = m.parse(sys.argv[1]); assert d.documentElement.tagName == "svg"' \
    "$work/map.svg" || fail "map.svg is not SVG"
grep -q '<title>xen#2 ' "$work/map.svg" || fail "map.svg does not show where xen#2 goes"

echo "== dmesg shows an update"
kexec-lu load --type liveupdate --reuse-cmdline "$work/xen-4.19.gz" >/dev/null
kexec-lu exec >/dev/null || fail "exec failed"
hyperv-sim dmesg > "$work/dmesg.txt"
for phase in quiesce save handover exec restore-pass0 restore-pass1 restore-pass2 unpause; do
    grep -Eq "live update phase $phase +[0-9.]+ ms" "$work/dmesg.txt" \
        || fail "dmesg does not show phase $phase: $(tail -20 "$work/dmesg.txt")"
done
grep -q "blackout" "$work/dmesg.txt" || fail "dmesg does not give the blackout"
echo ok
