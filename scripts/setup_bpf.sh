#!/usr/bin/env bash
# Idempotent set-up for `--netmon=ebpf`: BCC, kernel headers and tracefs.
#
#   scripts/setup_bpf.sh            install what is missing (root, or sudo is used)
#   scripts/setup_bpf.sh --check    only say what is missing; exit 1 if anything is
#
# BCC compiles the programs in bpf/ at load time, so it needs the headers of the
# running kernel under /lib/modules/$(uname -r)/build. A distribution kernel has
# a matching package (Debian: linux-headers-$(uname -r)). A custom kernel (a
# cloud VM's) has none: then, on Debian, we link the generic headers package as
# described in DESIGN.md fact 5. That is enough for the programs aegis-mcp uses,
# which read only stable UAPI contexts and tracepoint fields, never kernel
# structs whose layout could differ between the two versions.
#
# Running it again changes nothing once everything is there.
set -euo pipefail

CHECK_ONLY=0
[ "${1:-}" = "--check" ] && CHECK_ONLY=1

KREL="$(uname -r)"
MODDIR="/lib/modules/$KREL"
TRACEFS=/sys/kernel/tracing
MISSING=0

say() { printf '[setup_bpf] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if [ "$CHECK_ONLY" -eq 0 ]; then
        command -v sudo >/dev/null || { say "needs root (or sudo) to install BCC and headers"; exit 1; }
        SUDO="sudo"
    fi
fi

installed() {
    dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    say "installing: $*"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Whether apt knows a package by this exact name (it may not for a custom kernel).
apt_has() {
    apt-cache show "$1" >/dev/null 2>&1
}

headers_present() {
    # BCC reads include/ and the generated headers under build/; a dangling
    # link left by a removed package counts as missing.
    [ -e "$MODDIR/build/include/generated/autoconf.h" ] || [ -e "$MODDIR/build/include/linux/kconfig.h" ]
}

# The system's interpreter, not a per-user one (pyenv): BCC is a system package.
SYS_PYTHON="$(command -v /usr/bin/python3 || command -v python3)"

bcc_present() {
    "$SYS_PYTHON" -c 'import bcc' 2>/dev/null
}

setup_bcc() {
    if bcc_present; then
        return
    fi
    if [ "$CHECK_ONLY" -eq 1 ]; then
        say "missing: BCC (Debian/Ubuntu: python3-bpfcc; Fedora: python3-bcc)"
        MISSING=1
        return
    fi
    if command -v dpkg-query >/dev/null; then
        # bpfcc-tools brings tcplife, tcpconnect... handy to compare against.
        apt_install python3-bpfcc bpfcc-tools
    elif command -v dnf >/dev/null; then
        say "installing python3-bcc with dnf"
        $SUDO dnf install -y -q python3-bcc bcc-tools kernel-devel-"$KREL"
    else
        say "cannot install BCC on this system: install it (python3 module 'bcc') by hand"
        MISSING=1
    fi
}

# The newest directory matching a glob, by version order.
newest() {
    local pattern="$1"
    # shellcheck disable=SC2086
    ls -d $pattern 2>/dev/null | sort -V | tail -n 1
}

setup_headers() {
    if headers_present; then
        return
    fi
    if [ "$CHECK_ONLY" -eq 1 ]; then
        say "missing: kernel headers for $KREL ($MODDIR/build)"
        MISSING=1
        return
    fi
    if ! command -v dpkg-query >/dev/null; then
        say "no headers for kernel $KREL at $MODDIR/build: install your distribution's kernel-devel package"
        MISSING=1
        return
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    if apt_has "linux-headers-$KREL"; then
        apt_install "linux-headers-$KREL"
        headers_present && return
    fi
    say "no headers package exists for kernel $KREL (a custom kernel):"
    say "linking Debian's generic headers instead; the eBPF programs use only UAPI and tracepoint fields"
    installed linux-headers-amd64 || apt_install linux-headers-amd64
    local build common
    build="$(newest '/usr/src/linux-headers-*-amd64')"
    common="$(newest '/usr/src/linux-headers-*-common')"
    if [ -z "$build" ] || [ -z "$common" ]; then
        say "linux-headers-amd64 did not install headers under /usr/src: giving up"
        MISSING=1
        return
    fi
    $SUDO mkdir -p "$MODDIR"
    $SUDO ln -sfn "$build" "$MODDIR/build"
    $SUDO ln -sfn "$common" "$MODDIR/source"
    say "linked $MODDIR/build -> $build and $MODDIR/source -> $common"
}

setup_tracefs() {
    if [ -d "$TRACEFS/events" ]; then
        return
    fi
    if [ "$CHECK_ONLY" -eq 1 ]; then
        say "missing: tracefs is not mounted at $TRACEFS (the tracepoint tier needs it)"
        MISSING=1
        return
    fi
    say "mounting tracefs at $TRACEFS"
    $SUDO mount -t tracefs nodev "$TRACEFS" || { say "could not mount tracefs"; MISSING=1; }
}

setup_cgroup2() {
    local mnt
    for mnt in /sys/fs/cgroup /sys/fs/cgroup/unified; do
        [ -e "$mnt/cgroup.controllers" ] && return
    done
    say "missing: no cgroup v2 hierarchy (/sys/fs/cgroup or /sys/fs/cgroup/unified); eBPF attribution needs one"
    MISSING=1
}

setup_bcc
setup_headers
setup_tracefs
setup_cgroup2

if [ "$MISSING" -ne 0 ]; then
    say "eBPF set-up incomplete: aegis-mcp --netmon falls back to preload"
    exit 1
fi
say "eBPF ready: BCC at $("$SYS_PYTHON" -c 'import bcc, os; print(os.path.dirname(bcc.__file__))'), headers at $(readlink -f "$MODDIR/build")"
