#!/usr/bin/env bash
# The stock-kernel test VM, built and booted here with qemu (behind `make vm-test`):
# a Debian bookworm image with the kernel and its own headers, BCC, nftables, podman,
# booted with KVM when a probe shows a KVM guest really boots, else with TCG software
# emulation; the checkout is shared in read-only (9p) and the in-VM tests run there.
#
#   scripts/vm.sh build           build the image unless the cached one has this recipe
#   scripts/vm.sh test [ARGS]     build if needed, boot, run the in-VM tests
#                                 (tests/vm/in_vm_tests.txt; test ids in ARGS replace it,
#                                 pytest options are added), print their summary; exit
#                                 code: pytest's, 124 on timeout, 130 on Ctrl-C
#   scripts/vm.sh run -- CMD...   boot and run CMD in the checkout inside the VM
#   scripts/vm.sh box             package the image as a libvirt Vagrant box (prints its path)
#   scripts/vm.sh check           say what is missing to build and boot here
#   scripts/vm.sh recipe-hash     the image recipe's hash (the cache key)
#
# Environment: AEGIS_VM_CACHE (default ~/.cache/aegis-mcp/vm), AEGIS_VM_TIMEOUT (seconds
# for one VM run, default 1200), AEGIS_VM_BUILD_TIMEOUT (default 1500), AEGIS_VM_ACCEL
# (auto, kvm or tcg), AEGIS_VM_CPUS (2), AEGIS_VM_MEMORY (MiB, 3072), AEGIS_VM_QEMU
# (the qemu binary). Each run keeps its console log under $AEGIS_VM_CACHE/runs/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
RECIPE="${AEGIS_VM_RECIPE:-$ROOT/scripts/vm}"
CACHE="${AEGIS_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aegis-mcp/vm}"
QEMU="${AEGIS_VM_QEMU:-qemu-system-x86_64}"
RUN_TIMEOUT="${AEGIS_VM_TIMEOUT:-1200}"
BUILD_TIMEOUT="${AEGIS_VM_BUILD_TIMEOUT:-1500}"
CPUS="${AEGIS_VM_CPUS:-2}"
MEMORY="${AEGIS_VM_MEMORY:-3072}"
BUILD_SPACE_MB=5000   # debootstrap tree (1.7 GB) + the disk image made from it + debs
RUN_SPACE_MB=300      # the run's copy-on-write overlay and logs
KEEP_RUNS=5

say() { printf '[vm] %s\n' "$*" >&2; }
die() { say "$1"; exit "${2:-1}"; }

# ---- what is needed --------------------------------------------------------------------------

need_tool() {  # need_tool BINARY DEBIAN-PACKAGE
    command -v "$1" >/dev/null || die "$1 not found: install the $2 package (scripts/setup_vm.sh does)" 3
}

need_space() {  # need_space DIR MB WHAT
    mkdir -p "$1"
    local free
    free="$(df -Pm "$1" | awk 'NR==2 {print $4}')"
    if [ "${free:-0}" -lt "$2" ]; then
        die "not enough disk space for $3: ${free} MB free in $1, $2 MB needed (set AEGIS_VM_CACHE elsewhere)" 4
    fi
}

check() {
    local missing=0 tool
    for tool in "$QEMU:qemu-system-x86" "debootstrap:debootstrap" "mkfs.ext4:e2fsprogs" "qemu-img:qemu-utils"; do
        if ! command -v "${tool%%:*}" >/dev/null; then
            say "missing: ${tool%%:*} (Debian package ${tool#*:})"
            missing=1
        fi
    done
    [ "$(id -u)" -eq 0 ] || { say "missing: root (debootstrap builds the image as root)"; missing=1; }
    say "accelerator: $(choose_accel 2>/dev/null || echo unknown)"
    say "cache: $CACHE ($(df -Pm "$(existing_parent "$CACHE")" | awk 'NR==2 {print $4}') MB free)"
    return "$missing"
}

existing_parent() {
    local dir="$1"
    while [ ! -d "$dir" ]; do dir="$(dirname "$dir")"; done
    printf '%s' "$dir"
}

# ---- the image -------------------------------------------------------------------------------

recipe_hash() {
    cat "$RECIPE/packages" "$RECIPE/init" "$RECIPE/build_image.sh" | sha256sum | cut -c1-16
}

image_dir() { printf '%s/image-%s' "$CACHE" "$(recipe_hash)"; }

build() {
    local image tmp started
    image="$(image_dir)"
    [ -f "$image/manifest" ] && return 0
    [ "$(id -u)" -eq 0 ] || die "building the VM image needs root (debootstrap): run with sudo" 3
    need_tool debootstrap debootstrap
    need_tool mkfs.ext4 e2fsprogs
    need_space "$CACHE" "$BUILD_SPACE_MB" "the VM image"
    mkdir -p "$CACHE"
    exec 8>"$CACHE/build.lock"
    if ! flock -n 8; then
        say "another build of the image is running: waiting for it"
        flock -w "$BUILD_TIMEOUT" 8 || die "gave up waiting for the other build" 124
    fi
    if [ -f "$image/manifest" ]; then exec 8>&-; return 0; fi
    tmp="$CACHE/build.$$"
    rm -rf "$tmp"
    say "building the VM image (recipe $(recipe_hash)); log in $tmp/debootstrap.log"
    started=$SECONDS
    if ! timeout -k 10 "$BUILD_TIMEOUT" "$RECIPE/build_image.sh" "$tmp" "$CACHE/debs"; then
        rm -rf "$tmp"
        die "building the VM image failed or took over $BUILD_TIMEOUT s"
    fi
    mv "$tmp" "$image"
    say "image built in $((SECONDS - started)) s: $image"
    prune_images "$image"
    exec 8>&-
}

# Older images go, unless a VM runs from one (it holds its in-use lock).
prune_images() {
    local keep="$1" old
    for old in "$CACHE"/image-*; do
        [ "$old" = "$keep" ] || [ ! -d "$old" ] && continue
        (flock -n 9 && rm -rf "$old") 9>"$old/.in-use" 2>/dev/null || true
    done
    rm -rf "$CACHE"/build.[0-9]*[0-9] 2>/dev/null || true
}

# ---- booting ---------------------------------------------------------------------------------

# KVM only when a guest really boots under it: /dev/kvm may exist where nested
# virtualisation does not (the guest then hangs). The probe boots the image's kernel
# with no root file system, which panics at once where KVM works; the answer is kept
# for this boot of the host.
choose_accel() {
    case "${AEGIS_VM_ACCEL:-auto}" in
        kvm|tcg) echo "$AEGIS_VM_ACCEL"; return ;;
    esac
    if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then echo tcg; return; fi
    local boot_id cached log
    boot_id="$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)"
    cached="$CACHE/kvm-probe"
    if [ -f "$cached" ] && [ "$(head -n 1 "$cached")" = "$boot_id" ]; then
        sed -n 2p "$cached"
        return
    fi
    local kernel
    kernel="$(image_dir)/vmlinuz"
    [ -f "$kernel" ] || { echo tcg; return; }  # asked before the image exists: decide at boot
    log="$(mktemp)"
    timeout -k 2 20 "$QEMU" -accel kvm -cpu host -m 256 -kernel "$kernel" \
        -append "console=ttyS0 panic=-1" -no-reboot -display none -monitor none \
        -serial "file:$log" -nic none >/dev/null 2>&1 || true
    local answer=tcg
    grep -q 'Kernel panic\|VFS: Unable to mount root' "$log" && answer=kvm
    rm -f "$log"
    mkdir -p "$CACHE"
    printf '%s\n%s\n' "$boot_id" "$answer" >"$cached"
    echo "$answer"
}

QEMU_PID=""
RUN=""
TAIL_PID=""
EXTRA_QEMU=()   # more qemu arguments for this boot (the box's disk)
BOOT_FILES=()   # files copied into the results share before the boot

# Runs from traps too, where `set -e` would end the script at a kill of a process that
# is already gone (Ctrl-C reaches qemu as well): every step may fail.
stop_qemu() {
    [ -n "$TAIL_PID" ] && { kill "$TAIL_PID" 2>/dev/null || true; }
    TAIL_PID=""
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill -TERM "$QEMU_PID" 2>/dev/null || true
        local i
        for i in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$QEMU_PID" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$QEMU_PID" 2>/dev/null || true
    fi
    [ -n "$QEMU_PID" ] && { wait "$QEMU_PID" 2>/dev/null || true; }
    QEMU_PID=""
}

on_signal() {
    say "interrupted: stopping the VM"
    stop_qemu
    [ -n "$RUN" ] && say "console log: $RUN/console.log"
    exit 130
}

prune_runs() {
    local old
    # shellcheck disable=SC2012
    ls -1d "$CACHE"/runs/*/ 2>/dev/null | sort | head -n "-$KEEP_RUNS" | while read -r old; do
        rm -rf "$old"
    done
}

# boot ARGS...: boot the image and run `scripts/vm/guest.sh ARGS...` in it; sets RUN.
boot() {
    need_tool "$QEMU" qemu-system-x86
    local image accel cpu started deadline code
    image="$(image_dir)"
    [ -f "$image/manifest" ] || die "no VM image for this recipe: run scripts/vm.sh build" 3
    need_space "$CACHE/runs" "$RUN_SPACE_MB" "a VM run"
    RUN="$CACHE/runs/$(date -u +%Y%m%dT%H%M%S)-$$"
    mkdir -p "$RUN"
    say "run directory: $RUN"
    prune_runs
    {
        printf 'AEGIS_VM_SRC=%q\n' "$ROOT"
        printf 'AEGIS_VM_TIMEOUT=%q\n' "$((RUN_TIMEOUT > 60 ? RUN_TIMEOUT - 30 : RUN_TIMEOUT))"
        printf 'AEGIS_VM_ARGS=('
        printf '%q ' "$@"
        printf ')\n'
    } >"$RUN/request.env"
    [ "${#BOOT_FILES[@]}" -eq 0 ] || cp "${BOOT_FILES[@]}" "$RUN/"
    accel="$(choose_accel)"
    cpu=max
    [ "$accel" = kvm ] && cpu=host
    trap on_signal INT TERM HUP
    trap stop_qemu EXIT
    # An in-use lock: pruning leaves this image alone while the VM runs.
    exec 9>"$image/.in-use"
    flock -s 9
    say "booting $(sed -n 's/^kernel=//p' "$image/manifest") with $accel ($CPUS CPUs, $MEMORY MiB), at most $RUN_TIMEOUT s"
    started=$SECONDS
    "$QEMU" -name aegis-mcp-vm -machine q35 -accel "$accel" -cpu "$cpu" -smp "$CPUS" -m "$MEMORY" \
        -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0 init=/sbin/aegis-vm-init panic=-1 quiet loglevel=4" \
        -drive "file=$image/disk.raw,format=raw,if=virtio,snapshot=on" \
        -virtfs "local,path=$ROOT,mount_tag=aegis-src,security_model=none,readonly=on,multidevs=remap" \
        -virtfs "local,path=$RUN,mount_tag=aegis-out,security_model=none,multidevs=remap" \
        "${EXTRA_QEMU[@]}" -nic none -display none -monitor none -no-reboot \
        -serial "file:$RUN/console.log" </dev/null >"$RUN/qemu.log" 2>&1 &
    QEMU_PID=$!
    echo "$QEMU_PID" >"$RUN/qemu.pid"
    # The tests' output as they run (the results share is the host's own directory).
    : >"$RUN/guest.log"
    if [ -z "${AEGIS_VM_QUIET:-}" ]; then
        tail -n +1 -f --pid="$QEMU_PID" "$RUN/guest.log" >&2 &
        TAIL_PID=$!
    fi
    deadline=$((SECONDS + RUN_TIMEOUT))
    while kill -0 "$QEMU_PID" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            stop_qemu
            say "timed out after $RUN_TIMEOUT s; console log: $RUN/console.log"
            tail -n 15 "$RUN/console.log" >&2 || true
            return 124
        fi
        sleep 1
    done
    wait "$QEMU_PID" 2>/dev/null
    code=$?
    QEMU_PID=""
    [ -n "$TAIL_PID" ] && wait "$TAIL_PID" 2>/dev/null
    TAIL_PID=""
    echo "$((SECONDS - started))" >"$RUN/seconds"
    if [ ! -s "$RUN/exit-code" ]; then
        say "the VM stopped without a result (qemu exit $code); console log: $RUN/console.log"
        tail -n 15 "$RUN/qemu.log" "$RUN/console.log" >&2 || true
        return 1
    fi
    return "$(cat "$RUN/exit-code")"
}

summary() {  # summary EXIT-CODE
    local versions="$RUN/versions" line
    line="$(grep -E '^=+ .*(passed|failed|error|skipped|no tests ran).* =+$' "$RUN/guest.log" | tail -n 1 || true)"
    if [ -f "$versions" ]; then
        say "VM: kernel $(sed -n 's/^kernel=//p' "$versions"), headers $(sed -n 's/^headers=//p' "$versions"), BCC $(sed -n 's/^bcc=//p' "$versions")"
    fi
    say "in-VM tests: ${line:-no pytest summary} (exit $1, $(cat "$RUN/seconds" 2>/dev/null || echo ?) s in the VM)"
    say "logs: $RUN (console.log, guest.log, junit.xml, doctor.txt)"
}

cmd_test() {
    need_tool "$QEMU" qemu-system-x86
    build
    local code=0
    boot test "$@" || code=$?
    summary "$code"
    return "$code"
}

cmd_run() {
    [ "${1:-}" = "--" ] && shift
    [ "$#" -gt 0 ] || die "usage: scripts/vm.sh run -- CMD [ARGS...]" 2
    need_tool "$QEMU" qemu-system-x86
    build
    local code=0
    boot run "$@" || code=$?
    say "exit $code; logs: $RUN"
    return "$code"
}

# ---- the libvirt box -------------------------------------------------------------------------

# Vagrant's well-known insecure key, which `vagrant up` replaces by a fresh one at first login.
vagrant_key() {
    local gem
    for gem in /usr/share/rubygems-integration/all/gems/vagrant-* /opt/vagrant/embedded/gems/gems/vagrant-*; do
        [ -f "$gem/keys/vagrant.pub" ] && { printf '%s' "$gem/keys/vagrant.pub"; return; }
    done
    return 1
}

# The same image, on a partitioned disk with GRUB (made inside the VM, by guest.sh box),
# as a qcow2 box for vagrant-libvirt.
cmd_box() {
    need_tool "$QEMU" qemu-system-x86
    need_tool qemu-img qemu-utils
    need_tool sfdisk fdisk
    local key work raw box code=0
    key="$(vagrant_key)" || die "vagrant not found: install the vagrant package (the box takes its insecure key)" 3
    build
    box="$CACHE/aegis-mcp-bookworm-$(recipe_hash).box"
    if [ ! -f "$box" ]; then
        need_space "$CACHE" 4000 "the box"
        work="$CACHE/box.$$"
        rm -rf "$work"
        mkdir -p "$work"
        raw="$work/box.raw"
        truncate -s 8G "$raw"
        printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$raw"
        dd if="$(image_dir)/disk.raw" of="$raw" bs=1M seek=1 conv=notrunc,sparse status=none
        EXTRA_QEMU=(-drive "file=$raw,format=raw,if=virtio")
        BOOT_FILES=("$key")
        boot box /dev/vdb /run/aegis/out/vagrant.pub || code=$?
        EXTRA_QEMU=()
        if [ "$code" -ne 0 ]; then
            rm -rf "$work"
            die "making the box disk failed (exit $code); logs: $RUN"
        fi
        say "converting the disk to qcow2"
        qemu-img convert -c -O qcow2 "$raw" "$work/box.img"
        rm -f "$raw"
        printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": 8}\n' >"$work/metadata.json"
        printf 'Vagrant.configure("2") do |config|\n  config.vm.provider :libvirt do |lv|\n    lv.disk_bus = "virtio"\n  end\nend\n' >"$work/Vagrantfile"
        tar -C "$work" -cf "$box.tmp" metadata.json Vagrantfile box.img
        mv "$box.tmp" "$box"
        rm -rf "$work"
    fi
    say "box: $box ($(du -h "$box" | cut -f1))"
    say "add it with: vagrant box add --force --name aegis-mcp/bookworm $box"
    printf '%s\n' "$box"
}

case "${1:-}" in
    build) build ;;
    test) shift; cmd_test "$@" ;;
    run) shift; cmd_run "$@" ;;
    box) cmd_box ;;
    check) check ;;
    recipe-hash) recipe_hash ;;
    *) sed -n '2,/^set -e/p' "$0" | sed -e '/^set -e/d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
