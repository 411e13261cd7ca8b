#!/bin/sh
# regcache node setup: trust regcache's CA and send dockerd and containerd
# through regcache's CONNECT proxy.
#
#   curl -fsSL http://REGCACHE:3128/setup.sh | sudo sh
#
# Safe to run again: files already in place are left alone and nothing is
# restarted unless something changed. REGCACHE_SETUP_ROOT (default: /) names
# the root directory to write under.
set -eu

PROXY_URL="@PROXY_URL@"
NO_PROXY_LIST="@NO_PROXY@"
ROOT="${REGCACHE_SETUP_ROOT:-}"
CA_PEM='@CA_PEM@'

say() { printf 'regcache-setup: %s\n' "$*"; }

# install_file PATH CONTENT: write CONTENT to PATH unless it is already there.
# Succeeds (0) when it wrote, fails (1) when the file was up to date.
install_file() {
    target="$ROOT$1"
    if [ -f "$target" ] && [ "$(cat "$target")" = "$2" ]; then
        say "up to date: $1"
        return 1
    fi
    mkdir -p "$(dirname "$target")"
    printf '%s\n' "$2" > "$target.regcache-new"
    mv "$target.regcache-new" "$target"
    say "wrote $1"
    return 0
}

os_family() {
    ids=""
    if [ -f "$ROOT/etc/os-release" ]; then
        ids=$(. "$ROOT/etc/os-release"; echo "${ID:-} ${ID_LIKE:-}")
    fi
    case " $ids " in
        *" alpine "*) echo alpine ;;
        *" debian "* | *" ubuntu "*) echo debian ;;
        *" suse "* | *" opensuse "* | *" sles "*) echo suse ;;
        *" rhel "* | *" fedora "* | *" centos "*) echo rhel ;;
        *) echo unknown ;;
    esac
}

# 1. Trust the CA, the way this distribution does it.
ca_changed=0
family=$(os_family)
case "$family" in
    debian | alpine)
        if install_file /usr/local/share/ca-certificates/regcache.crt "$CA_PEM"; then
            update-ca-certificates
            ca_changed=1
        fi
        ;;
    rhel)
        if install_file /etc/pki/ca-trust/source/anchors/regcache.crt "$CA_PEM"; then
            update-ca-trust extract
            ca_changed=1
        fi
        ;;
    suse)
        if install_file /etc/pki/trust/anchors/regcache.crt "$CA_PEM"; then
            update-ca-certificates
            ca_changed=1
        fi
        ;;
    *)
        say "unknown distribution (no Debian, Ubuntu, RHEL, Fedora, Alpine or SUSE in /etc/os-release);"
        say "trust the CA by hand: curl -fsSL ${PROXY_URL}/ca.crt"
        exit 1
        ;;
esac

# 2. Send the container runtimes through the proxy (systemd drop-ins).
DROP_IN="[Service]
Environment=\"HTTP_PROXY=$PROXY_URL\" \"HTTPS_PROXY=$PROXY_URL\" \"NO_PROXY=$NO_PROXY_LIST\""
reload=0
restart=""
for unit in containerd docker; do
    if ! systemctl cat "$unit.service" > /dev/null 2>&1; then
        say "no $unit.service here; skipped"
        continue
    fi
    if install_file "/etc/systemd/system/$unit.service.d/regcache-proxy.conf" "$DROP_IN"; then
        reload=1
        restart="$restart $unit"
    elif [ "$ca_changed" = 1 ]; then
        # Go programs read the system CAs once, at start.
        restart="$restart $unit"
    fi
done
if [ "$reload" = 1 ]; then
    systemctl daemon-reload
fi
for unit in $restart; do
    say "restarting $unit"
    systemctl restart "$unit.service"
done
if [ -z "$restart" ]; then
    say "nothing changed; nothing restarted"
fi
say "done: this node pulls through $PROXY_URL"
