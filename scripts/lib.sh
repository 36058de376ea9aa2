# shellcheck shell=bash
# Helpers shared by respot's scripts (scripts/setup, scripts/build-image).
# Sourced, never run. Set SAY_PREFIX to the script's name first:
#
#   SAY_PREFIX=setup
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# say MESSAGE...: progress on stdout, prefixed with the script's name.
say() { printf '%s: %s\n' "${SAY_PREFIX:-respot}" "$*"; }
# die MESSAGE...: an error on stderr, then exit 1.
die() { printf '%s: error: %s\n' "${SAY_PREFIX:-respot}" "$*" >&2; exit 1; }

# debian_mirror SUITE: the Debian mirror apt already uses for SUITE (deb822
# .sources first, then one-line lists), else deb.debian.org.
debian_mirror() {
    local suite="$1" f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$suite" '
            BEGIN { RS=""; FS="\n" }
            {
                uris=""; ok=0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); uris=$i }
                    if ($i ~ /^Suites:/) { n=split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok=1 }
                }
                if (ok && uris != "") { split(uris, u, /[ \t]+/); print u[1]; exit }
            }' "$f")
        if [ -n "$uri" ]; then printf '%s\n' "$uri"; return; fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$suite" '$1 == "deb" { gsub(/\[[^]]*\]/, ""); $0 = $0; if ($3 == suite) { print $2; exit } }' "$f")
        if [ -n "$uri" ]; then printf '%s\n' "$uri"; return; fi
    done
    printf '%s\n' "http://deb.debian.org/debian"
}
