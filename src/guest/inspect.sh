#!/bin/sh
# respot's read-only inspector. Shipped by respot to every instance, root-owned.
#
# It is the forced command of respot's verification key
# (restrict,command="/usr/lib/respot/inspect"), so it is the only thing that
# key can run. It answers the named queries below, read from
# SSH_ORIGINAL_COMMAND, and refuses everything else with exit 64. It never
# writes, restarts, installs or evaluates anything.
#
# Grammar (single spaces, nothing else):
#   cloud-init | units | manifest | health | log | facts
#   journal <unit listed in /etc/respot/units> <n in 1..500>
#
# Output: one record per line, fields separated by TAB:
#   respot-inspect <TAB> 1 <TAB> <query>     first line
#   status <TAB> <component> <TAB> <word>    e.g. status cloud-init done | unavailable
#   kv     <TAB> <key> <TAB> <value>
#   text   <TAB> <block> <TAB> <line>        a line of a text block (logs, JSON)
#   unit   <TAB> <name> <TAB> <active state>
#   file   <TAB> <path> <TAB> <recorded sha256> <TAB> <live sha256 | missing>
#   probe  <TAB> <port> <TAB> <path> <TAB> <want> <TAB> <got | none> <TAB> <first bytes>
#   end    <TAB> ok                          last line; its absence means truncated
#
# RESPOT_INSPECT_ROOT is a test-only prefix for every file path; clients cannot
# set it (the key is `restrict`ed and sshd accepts no environment for it).

QUERIES="cloud-init units journal manifest health log facts"
REFUSED=64
MAX_JOURNAL=500

set -u
set -f
umask 077
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH LC_ALL=C

ROOT=${RESPOT_INSPECT_ROOT-}
T=$(printf '\t')

refuse() {
    printf 'refused\t%s\n' "$1" >&2
    exit "$REFUSED"
}

# Prefixes every line of stdin as a line of text block $1; awk also ends
# a last line that has no newline, so the next record starts on its own.
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

q_cloud_init() {
    if ! have cloud-init || [ ! -d "$ROOT/run/cloud-init" ]; then
        printf 'status\tcloud-init\tunavailable\n'
        return
    fi
    json=$(cloud-init status --format json 2>/dev/null)
    code=$?
    case $json in
        '{'*) ;;
        *) json= ;;
    esac
    # 0: ran (read the status word); 1: error; 2: degraded (newer releases).
    # Older releases also exit 2 on a usage error, hence the JSON check.
    case $code in
        0)
            word=$(printf '%s\n' "$json" | sed -n 's/^  "status": "\([a-z ]*\)",*$/\1/p' | head -n 1)
            case $word in
                done) word=done ;;
                running) word=running ;;
                disabled) word=disabled ;;
                "not run"|"") word=not-run ;;
                *) word=unknown ;;
            esac
            ;;
        1) word=error ;;
        2) if [ -n "$json" ]; then word=degraded; else word=unknown; fi ;;
        *) word=unknown ;;
    esac
    printf 'status\tcloud-init\t%s\n' "$word"
    printf 'kv\texit\t%s\n' "$code"
    printf '%s\n' "$json" | block status-json
    if [ -r "$ROOT/var/log/cloud-init-output.log" ]; then
        tail -n 40 "$ROOT/var/log/cloud-init-output.log" | block output-log
    fi
}

q_units() {
    if ! systemd_up; then
        printf 'status\tsystemd\tunavailable\n'
        return
    fi
    printf 'status\tsystemd\tavailable\n'
    if [ -r "$ROOT/etc/respot/units" ]; then
        while IFS= read -r unit || [ -n "$unit" ]; do
            [ -n "$unit" ] || continue
            state=$(systemctl is-active -- "$unit" 2>/dev/null)
            printf 'unit\t%s\t%s\n' "$unit" "${state:-unknown}"
        done < "$ROOT/etc/respot/units"
    fi
    systemctl --failed --no-legend --plain --no-pager 2>/dev/null | block failed
}

q_journal() {
    unit=$1
    n=$2
    if ! systemd_up || ! have journalctl; then
        printf 'status\tjournal\tunavailable\n'
        return
    fi
    printf 'status\tjournal\tavailable\n'
    journalctl --no-pager -o short-iso -n "$n" -u "$unit" 2>&1 | block journal
}

q_manifest() {
    if [ ! -r "$ROOT/etc/respot/manifest.json" ]; then
        printf 'status\tmanifest\tmissing\n'
        return
    fi
    printf 'status\tmanifest\tpresent\n'
    block manifest < "$ROOT/etc/respot/manifest.json"
    if [ -r "$ROOT/etc/respot/manifest.sha256" ]; then
        while read -r recorded path || [ -n "${path-}" ]; do
            [ -n "${path-}" ] || continue
            if [ -f "$ROOT$path" ] && [ -r "$ROOT$path" ]; then
                live=$(sha256sum < "$ROOT$path" | cut -c1-64)
            else
                live=missing
            fi
            printf 'file\t%s\t%s\t%s\n' "$path" "$recorded" "$live"
        done < "$ROOT/etc/respot/manifest.sha256"
    fi
}

# probe PORT PATH: prints "<status code>\n<body>" (code 000 when no answer).
fetch() {
    if have curl; then
        curl -s --max-time 5 -w '\n%{http_code}' "http://127.0.0.1:$1$2" 2>/dev/null
    elif have python3; then
        python3 - "$1" "$2" <<'PY' 2>/dev/null
import sys, urllib.request, urllib.error
url = "http://127.0.0.1:%s%s" % (sys.argv[1], sys.argv[2])
try:
    r = urllib.request.urlopen(url, timeout=5)
    code, body = r.status, r.read(512)
except urllib.error.HTTPError as e:
    code, body = e.code, e.read(512)
except Exception:
    code, body = 0, b""
sys.stdout.write(body.decode("utf-8", "replace") + "\n%03d" % code)
PY
    else
        return 2
    fi
}

q_health() {
    if ! have curl && ! have python3; then
        printf 'status\thealth\tunavailable\n'
        return
    fi
    printf 'status\thealth\tavailable\n'
    [ -r "$ROOT/etc/respot/probes" ] || return 0
    while read -r kind port path want || [ -n "${kind-}" ]; do
        [ "${kind-}" = http ] || continue
        case $port$want in *[!0-9]*|'') continue ;; esac
        case $path in /*) ;; *) continue ;; esac
        case $path in *[!A-Za-z0-9/._~%=?\&-]*) continue ;; esac
        out=$(fetch "$port" "$path")
        got=${out##*"
"}
        case $got in ''|*[!0-9]*|000) got=none; body= ;;
            *) body=${out%"
"*}; [ "$body" = "$out" ] && body= ;;
        esac
        body=$(printf '%s' "$body" | head -c 120 | tr '\t\r\n' '   ')
        printf 'probe\t%s\t%s\t%s\t%s\t%s\n' "$port" "$path" "$want" "$got" "$body"
    done < "$ROOT/etc/respot/probes"
}

q_log() {
    if [ ! -r "$ROOT/var/log/respot/deploy.log" ]; then
        printf 'status\tlog\tmissing\n'
        return
    fi
    printf 'status\tlog\tpresent\n'
    tail -n "$MAX_JOURNAL" "$ROOT/var/log/respot/deploy.log" | block log
}

q_facts() {
    read -r up _ < /proc/uptime && printf 'kv\tuptime_secs\t%s\n' "${up%.*}"
    read -r l1 l5 l15 _ < /proc/loadavg && printf 'kv\tload\t%s %s %s\n' "$l1" "$l5" "$l15"
    sed -n 's/^MemTotal: *\([0-9]*\) kB$/kv\tmem_total_kib\t\1/p; s/^MemAvailable: *\([0-9]*\) kB$/kv\tmem_available_kib\t\1/p' /proc/meminfo
    df -Pk / 2>/dev/null | tail -n 1 | while read -r _ size used avail _; do
        printf 'kv\tdisk_root_kib\t%s\nkv\tdisk_root_used_kib\t%s\nkv\tdisk_root_avail_kib\t%s\n' "$size" "$used" "$avail"
    done
    printf 'kv\tkernel\t%s\n' "$(uname -r)"
    id=unknown
    if [ -r "$ROOT/var/lib/cloud/data/instance-id" ]; then
        read -r id < "$ROOT/var/lib/cloud/data/instance-id" || true
    fi
    printf 'kv\tinstance_id\t%s\n' "${id:-unknown}"
}

cmd=${SSH_ORIGINAL_COMMAND-}
# Only letters, digits, single spaces and a few unit-name characters:
# no quotes, no $, no ;, no /, no globs.
case $cmd in
    '') refuse "no query; expected one of: $QUERIES" ;;
    *[!A-Za-z0-9@._:\ -]*) refuse "unexpected characters in the query" ;;
esac
IFS=' '
# shellcheck disable=SC2086 # splitting is the point; globbing is off (set -f)
set -- $cmd
IFS=' 	
'
[ "$*" = "$cmd" ] || refuse "tokens must be separated by single spaces"

query=$1
case " $QUERIES " in
    *" $query "*) ;;
    *) refuse "unknown query \`$query\`; expected one of: $QUERIES" ;;
esac

case $query in
    journal)
        [ $# -eq 3 ] || refuse "usage: journal <unit> <n>"
        unit=$2
        n=$3
        case $n in ''|*[!0-9]*|0*) refuse "n must be a number from 1 to $MAX_JOURNAL" ;; esac
        [ "${#n}" -le 3 ] && [ "$n" -le "$MAX_JOURNAL" ] || refuse "n must be a number from 1 to $MAX_JOURNAL"
        case $unit in -*) refuse "bad unit name" ;; esac
        [ -r "$ROOT/etc/respot/units" ] && grep -Fqx -e "$unit" "$ROOT/etc/respot/units" \
            || refuse "unit \`$unit\` is not one of respot's units"
        ;;
    *)
        [ $# -eq 1 ] || refuse "\`$query\` takes no arguments"
        ;;
esac

printf 'respot-inspect\t1\t%s\n' "$query"
case $query in
    cloud-init) q_cloud_init ;;
    units) q_units ;;
    journal) q_journal "$unit" "$n" ;;
    manifest) q_manifest ;;
    health) q_health ;;
    log) q_log ;;
    facts) q_facts ;;
esac
printf 'end\tok\n'
