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

echo "== every --json output matches its schema"
valid() {   # valid SCHEMA-NAME: stdin is the document
    python3 -c 'import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator(schema).validate(json.load(sys.stdin))' "$repo/schemas/$1.schema.json" \
        || fail "output does not match schemas/$1.schema.json"
}
hyperv-sim create --json --type hvm --memory 128 g1 | valid hyperv-sim-create
kexec-lu info --json "$work/xen-4.19.gz" | valid kexec-lu-info
kexec-lu ranges --json | valid kexec-lu-ranges
kexec-lu map --json | valid kexec-lu-map
kexec-lu load --json --dry-run --type liveupdate "$work/xen-4.19.gz" | valid kexec-lu-load
{ kexec-lu status --json || true; } | valid kexec-lu-status
hyperv-sim info --json | valid hyperv-sim-info
hyperv-sim list --json | valid hyperv-sim-list
hyperv-sim list -l | valid hyperv-sim-list-long
hyperv-sim verify --json | valid hyperv-sim-verify
hyperv-sim stream save -o "$work/s.bin" >/dev/null
hyperv-sim stream dump --json "$work/s.bin" | valid hyperv-sim-stream-dump

echo "== dmesg shows an update"
kexec-lu load --type liveupdate --reuse-cmdline "$work/xen-4.19.gz" >/dev/null
kexec-lu exec --json > "$work/exec.json" || fail "exec failed"
valid kexec-lu-exec < "$work/exec.json"
hyperv-sim dmesg > "$work/dmesg.txt"
for phase in quiesce save handover exec restore-pass0 restore-pass1 restore-pass2 unpause frametable-deferred; do
    grep -Eq "live update phase $phase +[0-9.]+ ms" "$work/dmesg.txt" \
        || fail "dmesg does not show phase $phase: $(tail -20 "$work/dmesg.txt")"
done
grep -q "blackout" "$work/dmesg.txt" || fail "dmesg does not give the blackout"
echo ok
