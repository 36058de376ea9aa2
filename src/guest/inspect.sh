#!/bin/sh
# respot's read-only inspector, shipped by respot to every instance: the only
# command respot's verification key runs (restrict,command= in
# /etc/respot/verify_keys/respot-verify, ForceCommand in 60-respot.conf), as
# the account respot-verify. It answers the queries below, read from
# SSH_ORIGINAL_COMMAND, refuses anything else (exit 64) and changes nothing.
# It reads no other variable: it reruns itself under env -i.
#
# Queries (single spaces): cloud-init | units | manifest | health | log |
#   facts | check | journal <unit in /etc/respot/units> <n in 1..500>
# `check` is what `verify` asks: cloud-init, units, manifest, health and
# packages in one run (one SSH channel, one inspector start per instance).
#
# One more entry, not over SSH: `inspect hash-manifest`, run as root through
# the one sudo rule in /etc/sudoers.d/respot (fixed argument, no
# input), prints the file, dir and secret records of `manifest` for files
# respot-verify cannot read itself (0600 ones). It reads only respot's lists.
#
# Output: TAB-separated records, MAX_REPLY bytes at most:
#   respot-inspect 1 <query>         first
#   status <component> <word>        e.g. status cloud-init running
#   kv <key> <value>
#   text <block> <line>              a line of a log, JSON block or /proc file
#   unit <name> <active state>
#   file <path> <recorded sha256> <live sha256|missing|symlink|special|unreadable>
#        <owner> <group> <mode>      (- when there is no regular file)
#   dir <path> <present|missing|symlink|special> <owner> <group> <mode>
#   secret <path> <present|missing|symlink|special|unreadable> <owner> <group> <mode>
#   package <name> <installed version|missing|unknown>
#   probe <port> <path> <want> <got|none> <first bytes>
#   end ok                           last; instead, at the cap: truncated <MAX_REPLY>
#
# ROOT is empty here and nothing sets it; tests rewrite that line in a copy.
#
# Parts between `# respot:only NAME` and `# respot:end` ship only to
# blueprints that use them (src/guest/inspector.rs): `packages` ([packages]),
# `placed` ([[directories]], [[secrets]]) and `root-hash` (files that
# respot-verify cannot read: the sudo entry above).

QUERIES="cloud-init units journal manifest health log facts check"
REFUSED=64
MAX_JOURNAL=500
MAX_REPLY=1048576
ROOT=

PATH=/usr/sbin:/usr/bin:/sbin:/bin
LC_ALL=C
IFS=' 	
'
export PATH LC_ALL
set -u
set -f
umask 077

T=$(printf '\t')
# Owner, group and mode when there is no regular file to read them from.
NONE="-$T-$T-"

refuse() {
    printf 'refused\t%s\n' "$1" >&2
    exit "$REFUSED"
}

# One record: its fields, TAB-separated, on one line.
r() {
    printf %s "$1"
    shift
    printf '\t%s' "$@"
    echo
}

# Every line of stdin as a line of text block $1 (awk ends a last line).
block() {
    awk -v prefix="text${T}$1${T}" '{ print prefix $0 }'
}

have() {
    command -v "$1" >/dev/null 2>&1
}

# systemd is running when /run/systemd/system exists (sd_booted(3)).
systemd_up() {
    [ -d "$ROOT/run/systemd/system" ] && have systemctl
}

# "running" as `cloud-init status` would say it (status.json, no result.json,
# no error listed), without starting Python on a booting instance.
cloud_init_running() {
    [ -f "$ROOT/run/cloud-init/status.json" ] && [ ! -e "$ROOT/run/cloud-init/result.json" ] || return 1
    ! tr -d ' \t\n' < "$ROOT/run/cloud-init/status.json" | grep -q '"errors":\[[^]]'
}

q_cloud_init() {
    if ! have cloud-init || [ ! -d "$ROOT/run/cloud-init" ]; then
        r status cloud-init unavailable
        return
    fi
    if cloud_init_running; then
        r status cloud-init running
    else
        # respot reads the state from the exit code and the JSON.
        json=$(cloud-init status --format json 2>/dev/null)
        r kv exit $?
        printf '%s\n' "$json" | block status-json
    fi
    if [ -r "$ROOT/var/log/cloud-init-output.log" ]; then
        tail -n 40 "$ROOT/var/log/cloud-init-output.log" | block output-log
    fi
}

q_units() {
    systemd_up || { r status systemd unavailable; return; }
    r status systemd available
    # `grep -s .`: the list's lines that are not empty, a last one without
    # its newline too; nothing when there is no list.
    grep -s . "$ROOT/etc/respot/units" | while IFS= read -r unit; do
        state=$(systemctl is-active -- "$unit" 2>/dev/null)
        r unit "$unit" "${state:-unknown}"
    done
    systemctl --failed --no-legend --plain --no-pager 2>/dev/null | block failed
}

q_journal() {
    systemd_up && have journalctl || { r status journal unavailable; return; }
    r status journal available
    journalctl --no-pager -o short-iso -n "$2" -u "$1" 2>&1 | block journal
}

# The live sha256 of $1, or why none: symlinks and special files are not read.
live_sha256() {
    if [ -L "$1" ]; then echo symlink
    elif [ ! -e "$1" ]; then echo missing
    elif [ ! -f "$1" ]; then echo special
    elif [ ! -r "$1" ]; then echo unreadable
    else
        # timeout: a file swapped for a FIFO since; sed: sha256sum's `\`.
        sum=$(timeout 20 sha256sum -- "$1" 2>/dev/null | sed 's/^\\//' | cut -c1-64)
        case $sum in
            *[!0-9a-f]*|'') echo unreadable ;;
            *) echo "$sum" ;;
        esac
    fi
}

# owner group mode of $1 (not followed if a symlink), or `- - -`.
attrs() {
    a=$(stat -c '%U %G %a' -- "$1" 2>/dev/null) || a=
    case $a in
        *' '*' '*)
            # shellcheck disable=SC2086 # splitting is the point; globbing is off
            set -- $a
            printf '%s\t%s\t%04d' "$1" "$2" "$3"
            ;;
        *) printf %s "$NONE" ;;
    esac
}

# respot:only placed
# present, missing, symlink or special: what is at $1, wanted a $2 (dir or file).
kind_at() {
    if [ -L "$1" ]; then echo symlink
    elif [ ! -e "$1" ]; then echo missing
    elif [ "$2" = dir ] && [ -d "$1" ]; then echo present
    elif [ "$2" = file ] && [ -f "$1" ]; then echo present
    else echo special
    fi
}
# respot:end

# The file, dir and secret records, hashing as whoever runs this.
manifest_records() {
    grep -s . "$ROOT/etc/respot/manifest.sha256" | while read -r recorded path; do
        [ -n "$path" ] || continue
        live=$(live_sha256 "$ROOT$path")
        case $live in symlink|missing|special) a=$NONE ;; *) a=$(attrs "$ROOT$path") ;; esac
        r file "$path" "$recorded" "$live" "$a"
    done
# respot:only placed
    for list in /etc/respot/directories /etc/respot/secrets; do
        [ -r "$ROOT$list" ] || continue
        record=secret want=file
        [ $list = /etc/respot/directories ] && record=dir want=dir
        while read -r path _ || [ -n "${path-}" ]; do
            case ${path-} in /*) ;; *) continue ;; esac
            state=$(kind_at "$ROOT$path" $want)
            a=$NONE
            [ "$state" = present ] && a=$(attrs "$ROOT$path")
            r "$record" "$path" "$state" "$a"
        done < "$ROOT$list"
    done
# respot:end
}

q_manifest() {
    [ -r "$ROOT/etc/respot/manifest.json" ] || { r status manifest missing; return; }
    r status manifest present
    block manifest < "$ROOT/etc/respot/manifest.json"
# respot:only root-hash
    # Root hashes what respot-verify cannot read, through the one sudo rule;
    # without it (no sudo, no rule, a test root), the records are our own.
    if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ] && have sudo &&
        out=$(timeout 60 sudo -n /usr/lib/respot/inspect hash-manifest 2>/dev/null); then
        printf '%s\n' "$out" | grep -E '^(file|dir|secret)'"$T"
        return
    fi
# respot:end
    manifest_records
}

# respot:only packages
# The installed version of each package in /etc/respot/packages.
q_packages() {
    if have dpkg-query; then m=dpkg
    elif have rpm; then m=rpm
    else r status packages unavailable; return
    fi
    r status packages $m
    [ -r "$ROOT/etc/respot/packages" ] || return 0
    while read -r name _ || [ -n "${name-}" ]; do
        case $name in ''|-*|*[!A-Za-z0-9+._-]*) continue ;; esac
        if [ $m = dpkg ]; then
            v=$(dpkg-query -W -f '${db:Status-Status} ${Version}' -- "$name" 2>/dev/null)
            case $v in "installed "*) v=${v#installed } ;; *) v=missing ;; esac
        else
            v=$(rpm -q --qf '%{EPOCHNUM}:%{VERSION}-%{RELEASE}' -- "$name" 2>/dev/null) || v=missing
            v=${v#0:}
        fi
        r package "$name" "${v:-unknown}"
    done < "$ROOT/etc/respot/packages"
}
# respot:end

q_health() {
    have curl || { r status health unavailable; return; }
    r status health available
    [ -r "$ROOT/etc/respot/probes" ] || return 0
    # Well-formed probes only: nothing else reaches curl's URL.
    grep -E '^http [0-9]+ /[A-Za-z0-9/._~%=?&-]* [0-9]+$' "$ROOT/etc/respot/probes" |
        while read -r _ port path want; do
            # The status code (none: no answer), a TAB, the body's first 120
            # bytes on one line: two fields of the probe record. No redirect
            # is followed, no proxy used, no config file read (-q).
            got=$(curl -q -s --max-time 5 --noproxy '*' -D - "http://127.0.0.1:$port$path" 2>/dev/null |
                head -c 8192 |
                awk 'NR == 1 { c = $2 }
                    b { s = s (n++ ? " " : "") $0 }
                    /^\r?$/ { b = 1 }
                    END {
                        gsub(/[\t\r]/, " ", s)
                        if (c !~ /^[0-9]+$/ || c == "000") { c = "none"; s = "" }
                        print c "\t" substr(s, 1, 120)
                    }')
            r probe "$port" "$path" "$want" "$got"
        done
}

q_log() {
    [ -r "$ROOT/var/log/respot/deploy.log" ] || { r status log missing; return; }
    r status log present
    tail -n "$MAX_JOURNAL" "$ROOT/var/log/respot/deploy.log" | block log
}

# The host's own numbers as they are; respot reads them (src/verify/facts.rs).
q_facts() {
    for f in uptime loadavg meminfo; do
        block $f < /proc/$f
    done
    df -Pk / 2>/dev/null | block df
    r kv kernel "$(uname -r)"
    id=$(head -n 1 "$ROOT/var/lib/cloud/data/instance-id" 2>/dev/null)
    r kv instance_id "${id:-unknown}"
    # Who runs the inspector, and whether it could write its home (it must not).
    me=$(id -un 2>/dev/null)
    r kv inspector_user "${me:-unknown}"
    r kv inspector_groups "$(id -Gn 2>/dev/null)"
    home=$(getent passwd "$me" 2>/dev/null | cut -d: -f6)
    r kv inspector_home "${home:-unknown}"
    [ -n "$home" ] && [ -d "$home" ] || return 0
    r kv inspector_home_owner "$(stat -c '%U:%G %a' -- "$home")"
    w=no
    [ -w "$home" ] && w=yes
    r kv inspector_home_writable $w
}

# respot:only root-hash
# Root's one entry (sudo, fixed argument): the manifest's records.
if [ $# -eq 1 ] && [ "$1" = hash-manifest ]; then
    [ "$(id -u)" = 0 ] || refuse "hash-manifest runs as root, through sudo"
    cd / || exit 70
    manifest_records
    exit 0
fi
# respot:end

# Rerun with our environment alone, the query as the argument.
if [ $# -eq 0 ]; then
    exec env -i PATH="$PATH" LC_ALL=C /bin/sh "$0" --query "${SSH_ORIGINAL_COMMAND-}"
fi
[ $# -eq 2 ] && [ "$1" = --query ] || refuse "the query comes from SSH_ORIGINAL_COMMAND"
cd / || exit 70

cmd=$2
# Only letters, digits, single spaces and a few unit-name characters:
# no quotes, no $, no ;, no /, no globs.
case $cmd in
    ''|*[!A-Za-z0-9@._:\ -]*) refuse "not a query; expected one of: $QUERIES" ;;
esac
IFS=' '
# shellcheck disable=SC2086 # splitting is the point; globbing is off (set -f)
set -- $cmd
IFS=' 	
'
[ "$*" = "$cmd" ] || refuse "not a query; expected one of: $QUERIES"

query=$1
case " $QUERIES " in
    *" $query "*) ;;
    *) refuse "unknown query \`$query\`; expected one of: $QUERIES" ;;
esac

case $query in
    journal)
        [ $# -eq 3 ] || refuse "usage: journal <unit> <n in 1..$MAX_JOURNAL>"
        unit=$2
        n=$3
        # Digits only, no leading zero, at most 3 of them, then the range.
        case $n in ''|*[!0-9]*|0*|????*) n=0 ;; esac
        [ "$n" -ge 1 ] && [ "$n" -le "$MAX_JOURNAL" ] || refuse "usage: journal <unit> <n in 1..$MAX_JOURNAL>"
        case $unit in -*) refuse "unit \`$unit\` is not one of respot's units" ;; esac
        [ -r "$ROOT/etc/respot/units" ] && grep -Fqx -e "$unit" "$ROOT/etc/respot/units" \
            || refuse "unit \`$unit\` is not one of respot's units"
        ;;
    *)
        [ $# -eq 1 ] || refuse "\`$query\` takes no arguments"
        ;;
esac

answer() {
    r respot-inspect 1 "$query"
    case $query in
        cloud-init) q_cloud_init ;;
        units) q_units ;;
        journal) q_journal "$unit" "$n" ;;
        manifest) q_manifest ;;
        health) q_health ;;
        log) q_log ;;
        facts) q_facts ;;
        check)
            q_cloud_init; q_units; q_manifest; q_health
# respot:only packages
            q_packages
# respot:end
            ;;
    esac
    r end ok
}

# At most MAX_REPLY bytes: past that, stop (SIGPIPE) and say `truncated`
# (64 bytes kept for it); head first, so awk never holds more than the cap.
budget=$((MAX_REPLY - 64))
answer | head -c "$((budget + 1))" | awk -v budget="$budget" -v cap="$MAX_REPLY" '
    { n += length($0) + 1 }
    n > budget { printf "truncated\t%d\n", cap; exit }
    { print }'
