#!/usr/bin/env bash
# Builds the aegis-mcp test VM image from Debian's packages only (no image or box
# registry): debootstrap of bookworm with the packages listed in scripts/vm/packages,
# then an ext4 disk image made from that tree by mkfs.ext4 -d (no loop device, no
# mount). Called by scripts/vm.sh build; this file, `packages` and `init` are the
# image's recipe: changing any of them rebuilds it.
#
#   build_image.sh OUT_DIR DEB_CACHE_DIR
#
# OUT_DIR receives disk.raw (the root file system, the whole disk), vmlinuz and
# initrd.img (booted directly by qemu) and manifest (versions, for the reports).
set -euo pipefail

OUT="$1"
DEBS="$2"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUITE=bookworm
DISK_SIZE="${AEGIS_VM_DISK_SIZE:-6G}"

say() { printf '[vm build] %s\n' "$*" >&2; }

# The host's own Debian mirror when it has one (a local mirror or proxy keeps working),
# else debootstrap's default.
host_mirror() {
    local uri
    uri="$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -v security | head -n 1 || true)"
    if [ -z "$uri" ]; then
        uri="$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\)[[:space:]]\+bookworm[[:space:]].*/\2/p' \
            /etc/apt/sources.list 2>/dev/null | head -n 1 || true)"
    fi
    printf '%s' "$uri"
}

packages="$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$HERE/packages" | tr -s '[:space:]' ',' | sed 's/,$//')"
root="$OUT/root"
mkdir -p "$DEBS" "$OUT"

started=$SECONDS
say "debootstrap $SUITE with: $packages"
mirror="$(host_mirror)"
# shellcheck disable=SC2086
if ! debootstrap --variant=minbase --cache-dir="$DEBS" --include="$packages" \
    "$SUITE" "$root" $mirror >"$OUT/debootstrap.log" 2>&1; then
    tail -n 20 "$OUT/debootstrap.log" >&2
    [ -f "$root/debootstrap/debootstrap.log" ] && grep -i -m 5 "^dpkg: error\|(possibly the package" "$root/debootstrap/debootstrap.log" >&2
    say "debootstrap failed (full log: $OUT/debootstrap.log)"
    exit 1
fi
bootstrap_secs=$((SECONDS - started))

kver="$(basename "$(ls -d "$root"/lib/modules/* | sort -V | tail -n 1)")"
utsrelease="$root/usr/src/linux-headers-$kver/include/generated/utsrelease.h"
if ! grep -q "\"$kver\"" "$utsrelease" 2>/dev/null; then
    say "the headers in the image are not made for its kernel $kver ($utsrelease)"
    exit 1
fi

# What the VM needs besides the packages: its init, a name, and no stale apt lists.
install -m 0755 "$HERE/init" "$root/sbin/aegis-vm-init"
echo aegis-vm >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\taegis-vm\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
: >"$root/etc/fstab"
# No systemd under aegis-vm-init: podman must not ask it for cgroups or its journal.
mkdir -p "$root/etc/containers"
printf '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' >"$root/etc/containers/containers.conf"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root/debootstrap"

bcc="$(chroot "$root" dpkg-query -W -f='${Version}' python3-bpfcc)"
podman="$(chroot "$root" dpkg-query -W -f='${Version}' podman)"
python="$(chroot "$root" python3 -c 'import platform; print(platform.python_version())')"
cp "$root/boot/vmlinuz-$kver" "$OUT/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$OUT/initrd.img"

say "making the ext4 disk image ($DISK_SIZE, sparse)"
rm -f "$OUT/disk.raw"
mkfs.ext4 -q -F -L aegis-root -d "$root" -E root_owner=0:0 "$OUT/disk.raw" "$DISK_SIZE" >/dev/null
rm -rf "$root"

cat >"$OUT/manifest" <<EOF
kernel=$kver
bcc=$bcc
podman=$podman
python=$python
suite=$SUITE
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
debootstrap_seconds=$bootstrap_secs
build_seconds=$((SECONDS - started))
EOF
say "image ready: kernel $kver, BCC $bcc, in $((SECONDS - started)) s"
