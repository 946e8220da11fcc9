#!/usr/bin/env bash
# Shell completion, as a user installs it: generate the bash, zsh and fish
# scripts of both programs, source the bash ones, and complete command
# names, options and option values the way bash does (COMP_WORDS,
# COMP_CWORD, then the completion function fills COMPREPLY).  It all goes
# through the installed console scripts, kexec-lu's classic kexec-tools
# routing included, and needs no host.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

complete_var() { echo "_$(echo "$1" | tr 'a-z-' 'A-Z_')_COMPLETE"; }

echo "== generate"
for prog in kexec-lu hyperv-sim; do
    var=$(complete_var "$prog")
    func=_$(echo "$prog" | tr - _)_completion
    for shell in bash zsh fish; do
        env "$var=${shell}_source" "$prog" > "$work/$prog.$shell" 2> "$work/err" \
            || fail "$var=${shell}_source $prog failed: $(cat "$work/err")"
        [ -s "$work/$prog.$shell" ] || fail "$var=${shell}_source $prog printed nothing"
        [ ! -s "$work/err" ] || fail "$var=${shell}_source $prog complained: $(cat "$work/err")"
        grep -q "$func" "$work/$prog.$shell" || fail "$prog.$shell does not define $func"
    done
    grep -qx "#compdef $prog" "$work/$prog.zsh" || fail "$prog.zsh is not a #compdef $prog script"
    grep -q "complete --no-files --command $prog " "$work/$prog.fish" \
        || fail "$prog.fish registers no completion for $prog"
    bash -n "$work/$prog.bash" || fail "$prog.bash is not valid bash"
done

echo "== source the bash scripts"
. "$work/kexec-lu.bash"
. "$work/hyperv-sim.bash"
complete -p kexec-lu | grep -q -- "-F _kexec_lu_completion" || fail "kexec-lu has no completion"
complete -p hyperv-sim | grep -q -- "-F _hyperv_sim_completion" || fail "hyperv-sim has no completion"

# offers WORD... -- what bash offers for the last word of the command line
# WORD... (the last one may be empty), one per line.
offers() {
    COMP_WORDS=("$@")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMPREPLY=()
    local func
    func=$(complete -p "$1" | sed 's/.*-F \([^ ]*\) .*/\1/')
    # bash calls it with the command, the word being completed, the one before.
    "$func" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}" 2>"$work/err" \
        || fail "$func failed for '$*': $(cat "$work/err")"
    [ ! -s "$work/err" ] || fail "completing '$*' wrote to stderr: $(cat "$work/err")"
    [ ${#COMPREPLY[@]} -eq 0 ] || printf '%s\n' "${COMPREPLY[@]}"
}

# expect "WANTED..." WORD...: every WANTED, and only those, is offered.
expect() {
    local want got
    want=$(printf '%s\n' $1 | sort)
    shift
    got=$(offers "$@" | sort)
    [ "$got" = "$want" ] || fail "completing '$*' offers [$(echo $got)], expected [$(echo $want)]"
}

echo "== bash: commands, options, option values"
expect "load"                      kexec-lu lo
expect "--type"                    kexec-lu load --ty
expect "liveupdate"                kexec-lu load --type l
expect "crash default liveupdate"  kexec-lu load --type ""
expect "liveupdate"                kexec-lu exec --type ""
expect "create"                    hyperv-sim cr
expect "dump"                      hyperv-sim stream d
expect "hvm"                       hyperv-sim create --type h
expect "--json"                    hyperv-sim verify --js
# Read whole first: grep -q stopping early would SIGPIPE offers (pipefail).
top=$(offers kexec-lu "")
grep -qx exec <<< "$top" || fail "kexec-lu offers no exec: $top"
grep -qx map <<< "$top" || fail "kexec-lu offers no map: $top"
[ "$(offers hyperv-sim "" | wc -l)" -ge 12 ] || fail "hyperv-sim offers too few commands"

echo "== zsh and fish protocols"
# What the zsh and fish scripts ask the program (no zsh or fish needed).
zsh_out=$(env COMP_WORDS="hyperv-sim cr" COMP_CWORD=1 _HYPERV_SIM_COMPLETE=zsh_complete hyperv-sim)
[ "$(echo "$zsh_out" | sed -n 2p)" = create ] || fail "zsh completion of 'hyperv-sim cr': $zsh_out"
fish_out=$(env COMP_WORDS="kexec-lu load --type l" COMP_CWORD=l _KEXEC_LU_COMPLETE=fish_complete kexec-lu)
[ "$fish_out" = "plain,liveupdate" ] || fail "fish completion of 'kexec-lu load --type l': $fish_out"

echo "== kexec-lu's classic routing stays out of the way"
# main() sends an argv starting with an option to the kexec-tools front end;
# completion requests carry no argv, so click's group answers them, also
# after a classic option, without running anything or printing an error.
expect "-h --help -v --version"    kexec-lu -
rc=0
out=$(env COMP_WORDS="kexec-lu -l " COMP_CWORD=2 _KEXEC_LU_COMPLETE=bash_complete kexec-lu 2>"$work/err") || rc=$?
[ "$rc" -eq 0 ] || fail "completing after 'kexec-lu -l' exits $rc: $(cat "$work/err")"
[ ! -s "$work/err" ] || fail "completing after 'kexec-lu -l' wrote to stderr: $(cat "$work/err")"
# ... and a real classic command still goes to the classic front end.
[ "$(status_of kexec-lu -S --load-live-update)" = 255 ] \
    || fail "kexec-lu -S without a host should exit 255 (classic status, error)"

echo "== completion needs no host"
[ ! -e "$HYPERV_SIM_DIR/xen.pid" ] || fail "a host was started"
echo "ok"
