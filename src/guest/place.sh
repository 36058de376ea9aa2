#!/bin/sh
# Places what cloud-init's write_files cannot, from respot's lists; shipped
# by respot, run as root by the template's runcmd (after `users`, before
# the units start), never over SSH. Each line of each list is one item.
#   /etc/respot/directories  path owner group mode      made, or set so
#   /etc/respot/owners       path owner group           bundled files' owners
#                                                       (the bundle lands as root)
#   /etc/respot/secrets      path owner group mode source
# A secret's content is never logged and lands only at its path (through a
# 0600 temporary file beside it, then renamed). Sources:
#   seed:NAME  a file in the NoCloud seed (volume cidata), local VMs
#   ssm:NAME   an SSM Parameter Store SecureString, fetched with the
#              instance profile's credentials from IMDSv2 (curl --aws-sigv4)
# ROOT and SEED are empty here and nothing sets them; tests rewrite these
# lines in a copy (a fixture root; a directory standing for the seed).
ROOT=
SEED=
PATH=/usr/sbin:/usr/bin:/sbin:/bin
LIST=$ROOT/etc/respot/secrets
umask 077
set -u

log() {
    mkdir -p "$ROOT/var/log/respot"
    printf '%s place: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >> "$ROOT/var/log/respot/deploy.log"
}

status=0
if [ -r "$ROOT/etc/respot/directories" ]; then
    while read -r path owner group mode || [ -n "${path-}" ]; do
        case ${path-} in /*) ;; *) continue ;; esac
        install -d -o "$owner" -g "$group" -m "$mode" -- "$ROOT$path" || { log "FAILED: directory $path"; status=1; }
    done < "$ROOT/etc/respot/directories"
fi
if [ -r "$ROOT/etc/respot/owners" ]; then
    while read -r path owner group || [ -n "${path-}" ]; do
        case ${path-} in /*) ;; *) continue ;; esac
        if [ -f "$ROOT$path" ] && [ ! -L "$ROOT$path" ] && chown -- "$owner:$group" "$ROOT$path"; then
            :
        else
            log "FAILED: owner of $path"
            status=1
        fi
    done < "$ROOT/etc/respot/owners"
fi
[ -r "$LIST" ] || exit $status

seed=$SEED
cleanup() {
    if [ -n "$seed" ] && [ -z "$SEED" ]; then
        umount "$seed" 2>/dev/null
        rmdir "$seed" 2>/dev/null
    fi
}
trap cleanup EXIT

from_seed() {
    if [ -z "$seed" ]; then
        seed=$(mktemp -d) || return 1
        mount -o ro LABEL=cidata "$seed" 2>/dev/null || { rmdir "$seed"; seed=; return 1; }
    fi
    case $1 in */*|.*|'') return 1 ;; esac
    cat -- "$seed/$1"
}

imds() {
    token=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
        http://169.254.169.254/latest/api/token) || return 1
    curl -sf -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/$1"
}

from_ssm() {
    region=$(imds meta-data/placement/region) || return 1
    role=$(imds meta-data/iam/security-credentials/) || return 1
    creds=$(imds "meta-data/iam/security-credentials/$role") || return 1
    field() {
        printf '%s' "$creds" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
    }
    key=$(field AccessKeyId) && secret=$(field SecretAccessKey) && session=$(field Token) || return 1
    body=$(printf '{"Name":"%s","WithDecryption":true}' "$1")
    curl -sf --max-time 20 --aws-sigv4 "aws:amz:$region:ssm" -u "$key:$secret" \
        -H "x-amz-security-token: $session" -H 'X-Amz-Target: AmazonSSM.GetParameter' \
        -H 'Content-Type: application/x-amz-json-1.1' -d "$body" "https://ssm.$region.amazonaws.com/" |
        python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin)["Parameter"]["Value"])'
}

while read -r path owner group mode source || [ -n "${path-}" ]; do
    case ${path-} in /*) ;; *) continue ;; esac
    path=$ROOT$path
    dir=$(dirname -- "$path")
    mkdir -p -- "$dir"
    tmp=$(mktemp -- "$dir/.respot-secret.XXXXXX") || { log "FAILED: $path: no temporary file"; status=1; continue; }
    case $source in
        seed:*) from_seed "${source#seed:}" > "$tmp" ;;
        ssm:*) from_ssm "${source#ssm:}" > "$tmp" ;;
        *) false ;;
    esac
    if [ $? -eq 0 ] && chown -- "$owner:$group" "$tmp" && chmod -- "$mode" "$tmp" && mv -f -- "$tmp" "$path"; then
        log "secret ${path#"$ROOT"} ($owner:$group $mode, from ${source%%:*})"
    else
        rm -f -- "$tmp"
        log "FAILED: secret ${path#"$ROOT"} from $source"
        status=1
    fi
done < "$LIST"
exit $status
