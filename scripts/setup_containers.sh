#!/usr/bin/env bash
# Idempotent set-up for `--sandbox=container` (DESIGN.md fact 7), run by `make setup`:
#
#   1. the engines from Debian's packages: podman (with runc: crun refuses the hybrid
#      cgroup layout), uidmap and slirp4netns for rootless podman, docker.io (dockerd,
#      which the tests start on a private socket), debootstrap for the base image;
#   2. a plain user for the rootless tests (AEGIS_ROOTLESS_USER, default aegis-rootless):
#      subuid/subgid ranges, a 0700 XDG_RUNTIME_DIR, overlay storage (vfs costs 5 s a run),
#      and /dev/net/tun opened to users (0666, as most distributions ship it) so that
#      slirp4netns can give rootless containers a network;
#   3. the base image (`aegis-mcp image build`) in rootful podman and in that user's
#      rootless podman, its root file system cached under ~/.cache/aegis-mcp/images/.
#
#   scripts/setup_containers.sh [VENV]     (VENV: where aegis-mcp is installed; step 3 needs it)
#
# Waits for another apt run's dpkg lock rather than failing. Exit 1 when something could
# not be set up (then the container tests skip and say what is missing).
set -euo pipefail

say() { printf '[setup_containers] %s\n' "$*" >&2; }

VENV="${1:-}"
ROOTLESS_USER="${AEGIS_ROOTLESS_USER:-aegis-rootless}"
PACKAGES=(podman runc uidmap slirp4netns netavark docker.io debootstrap)
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

installed() {
    dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

install_packages() {
    local todo=() pkg
    for pkg in "${PACKAGES[@]}"; do installed "$pkg" || todo+=("$pkg"); done
    [ "${#todo[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null || { say "not a Debian-like system: install ${todo[*]} yourself"; return 1; }
    say "installing: ${todo[*]}"
    local lock=(-o DPkg::Lock::Timeout=600)
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" update -qq
    # No recommends: they would bring crun (refused by the hybrid cgroup layout) and
    # fuse-overlayfs (/dev/fuse is 0600 here; native overlay serves rootless better).
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -qq \
        --no-install-recommends "${todo[@]}" >/dev/null
}

# The first free range of 65536 ids above every range already given out.
next_subid_start() {
    awk -F: 'BEGIN { top = 100000 } { end = $2 + $3; if (end > top) top = end } END { print top }' \
        /etc/subuid /etc/subgid 2>/dev/null || echo 100000
}

prepare_rootless_user() {
    local user="$ROOTLESS_USER"
    if ! id "$user" >/dev/null 2>&1; then
        say "creating the rootless test user $user"
        $sudo useradd --create-home --shell /bin/bash --user-group "$user"
    fi
    local uid home
    uid="$(id -u "$user")"
    home="$(getent passwd "$user" | cut -d: -f6)"
    touch /etc/subuid /etc/subgid
    if ! grep -q "^$user:" /etc/subuid || ! grep -q "^$user:" /etc/subgid; then
        local start
        start="$(next_subid_start)"
        grep -q "^$user:" /etc/subuid || echo "$user:$start:65536" | $sudo tee -a /etc/subuid >/dev/null
        grep -q "^$user:" /etc/subgid || echo "$user:$start:65536" | $sudo tee -a /etc/subgid >/dev/null
    fi
    # No logind here: make the runtime directory pam_systemd would have made.
    local run="/run/user/$uid"
    $sudo install -d -m 0700 -o "$user" -g "$user" "$run" "$run/podman"
    local conf="$home/.config/containers"
    if ! grep -qs '^driver = "overlay"' "$conf/storage.conf"; then
        $sudo install -d -m 0755 -o "$user" -g "$user" "$home/.config" "$conf"
        printf '[storage]\ndriver = "overlay"\n' | $sudo tee "$conf/storage.conf" >/dev/null
        $sudo chown "$user:$user" "$conf/storage.conf"
    fi
}

open_tun() {
    [ -c /dev/net/tun ] || { say "/dev/net/tun is missing: rootless containers get no network"; return 1; }
    if [ "$(stat -c %a /dev/net/tun)" != "666" ]; then
        say "opening /dev/net/tun to users (0666) for slirp4netns"
        $sudo chmod 0666 /dev/net/tun
    fi
}

build_images() {
    local aegis="$VENV/bin/aegis-mcp"
    if [ -z "$VENV" ] || [ ! -x "$aegis" ]; then
        say "no aegis-mcp in '$VENV': image not built"
        return 0
    fi
    # Rootful podman (a private service for the build), then the test user's own storage.
    $sudo "$aegis" image build | tail -1 >&2
    $sudo "$aegis" image build --user "$ROOTLESS_USER" | tail -1 >&2
}

status=0
install_packages || { say "packages missing: the container tests skip"; exit 1; }
prepare_rootless_user || { say "rootless user not prepared: the rootless tests skip"; status=1; }
open_tun || status=1
build_images || { say "image build failed: the container tests skip"; status=1; }
exit $status
