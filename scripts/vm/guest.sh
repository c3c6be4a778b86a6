#!/usr/bin/env bash
# Runs inside the aegis-mcp test VM, whichever way it was started:
#
#   guest.sh boot        the qemu path: called by /sbin/aegis-vm-init as PID 1; mounts what
#                        the tests need, runs the request scripts/vm.sh left in the results
#                        share, writes the exit code there and powers off
#   guest.sh packages    the Vagrant path: installs what scripts/vm/packages lists and is
#                        missing (then reboot: the kernel may be new)
#   guest.sh provision   the Vagrant path: checks the running kernel's headers, sets up
#                        eBPF and the virtualenv
#   guest.sh box DISK KEY the qemu path, for scripts/vm.sh box: makes DISK a bootable box
#   guest.sh test [ARGS] both paths: `aegis-mcp doctor`, then the in-VM tests
#                        (tests/vm/in_vm_tests.txt) with pytest; test ids in ARGS replace
#                        that list, options are added to it
#
# Results (doctor.txt, junit.xml, versions) go to $AEGIS_VM_OUT (the results share under
# qemu, /tmp/aegis-vm-results elsewhere).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
say() { printf '[vm guest] %s\n' "$*" >&2; }

# ---- the Vagrant path ------------------------------------------------------------------------

listed_packages() {
    sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$HERE/packages"
}

# What the list names and the machine lacks (a box of someone else's making). The kernel
# packages may bring a newer kernel than the running one: the caller reboots after this.
packages() {
    set -e
    local todo
    export DEBIAN_FRONTEND=noninteractive
    mapfile -t todo < <(listed_packages | while read -r pkg; do
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || echo "$pkg"
    done)
    [ "${#todo[@]}" -eq 0 ] && return 0
    say "installing: ${todo[*]}"
    # another apt run (unattended upgrades at first boot) may hold the lock for a while
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${todo[@]}" >/dev/null
}

provision() {
    set -e
    local src kernel
    src="$(cd "$HERE/../.." && pwd)"
    kernel="$(uname -r)"
    export AEGIS_VM=1
    if ! grep -qs "\"$kernel\"" "/lib/modules/$kernel/build/include/generated/utsrelease.h"; then
        say "no headers made for the running kernel $kernel: the kprobe tier would be off"
        say "(vagrant provision --provision-with packages installs them and reboots)"
        exit 1
    fi
    "$src/scripts/setup_bpf.sh"
    make -C "$src" --no-print-directory setup
}

# ---- the libvirt box (scripts/vm.sh box) -----------------------------------------------------

# make_box DISK KEY: DISK holds a copy of this VM's root file system in its first partition;
# make it a machine Vagrant can boot and log in to: its own fstab, DHCP on its NIC,
# a vagrant user with KEY and sudo, and GRUB on the disk.
make_box() {
    set -e
    local disk="$1" key="$2" mnt=/run/aegis/box kver fs
    e2fsck -f -p "${disk}1" >/dev/null
    resize2fs "${disk}1" >/dev/null 2>&1
    mkdir -p "$mnt"
    mount "${disk}1" "$mnt"
    echo 'LABEL=aegis-root / ext4 errors=remount-ro 0 1' >"$mnt/etc/fstab"
    # DHCP on the first NIC (eth0: net.ifnames=0), with the resolver the DHCP server names
    printf 'auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n' \
        >"$mnt/etc/network/interfaces"
    rm -f "$mnt/etc/containers/containers.conf"  # under systemd, podman may use it again
    chroot "$mnt" useradd --create-home --shell /bin/bash vagrant
    install -d -m 0700 -o 1000 -g 1000 "$mnt/home/vagrant/.ssh"
    install -m 0600 -o 1000 -g 1000 "$key" "$mnt/home/vagrant/.ssh/authorized_keys"
    echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$mnt/etc/sudoers.d/vagrant"
    chmod 0440 "$mnt/etc/sudoers.d/vagrant"
    # each box makes its own ssh host keys at first boot
    rm -f "$mnt"/etc/ssh/ssh_host_*
    mkdir -p "$mnt/etc/systemd/system/ssh.service.d"
    printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
        >"$mnt/etc/systemd/system/ssh.service.d/hostkeys.conf"
    kver="$(basename "$(ls -d "$mnt"/lib/modules/* | sort -V | tail -n 1)")"
    for fs in dev proc sys; do mount --bind "/$fs" "$mnt/$fs"; done
    chroot "$mnt" grub-install --target=i386-pc "$disk"
    {
        echo 'set timeout=1'
        echo 'insmod part_msdos'
        echo 'insmod ext2'
        echo 'search --no-floppy --label --set=root aegis-root'
        echo 'menuentry "Debian GNU/Linux (aegis-mcp test VM)" {'
        echo "    linux /boot/vmlinuz-$kver root=LABEL=aegis-root ro console=tty0 console=ttyS0 net.ifnames=0"
        echo "    initrd /boot/initrd.img-$kver"
        echo '}'
    } >"$mnt/boot/grub/grub.cfg"
    for fs in sys proc dev; do umount "$mnt/$fs"; done
    umount "$mnt"
    sync
    say "box disk ready: kernel $kver, GRUB on $disk"
}

# ---- both paths --------------------------------------------------------------------------------

run_tests() {
    local src out venv code
    src="$(cd "$HERE/../.." && pwd)"
    out="${AEGIS_VM_OUT:-/tmp/aegis-vm-results}"
    venv="$src/.venv"
    export AEGIS_VM=1
    mkdir -p "$out"
    cd "$src" || return 1
    if ! "$venv/bin/python" -c 'import aegis_mcp' 2>/dev/null; then
        say "the checkout's virtualenv ($venv) does not work here: run 'make setup' first"
        return 2
    fi
    versions "$out/versions"
    "$venv/bin/aegis-mcp" doctor | tee "$out/doctor.txt"
    # Test ids among ARGS replace the list; options alone (-x, --durations=5) add to it.
    local selection=() arg
    for arg in "$@"; do
        [ "${arg#-}" = "$arg" ] && selection=("$@") && break
    done
    if [ "${#selection[@]}" -eq 0 ]; then
        mapfile -t selection < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' tests/vm/in_vm_tests.txt)
        selection+=("$@")
    fi
    # Slow software emulation: a BCC compile takes tens of seconds here, so the per-test
    # limit is wider than on the host; the whole run is bounded by scripts/vm.sh.
    # The suite's own waits (tests/helpers.py) stretch by the same measure.
    PYTHONUNBUFFERED=1 AEGIS_TEST_TIME_SCALE="${AEGIS_TEST_TIME_SCALE:-6}" \
        "$venv/bin/python" -m pytest -p no:cacheprovider -v -ra \
        --timeout="${AEGIS_VM_TEST_TIMEOUT:-900}" --junitxml="$out/junit.xml" "${selection[@]}"
    code=$?
    return "$code"
}

versions() {
    local headers bcc
    headers="$(sed -n 's/.*UTS_RELEASE "\(.*\)"/\1/p' "/lib/modules/$(uname -r)/build/include/generated/utsrelease.h" 2>/dev/null)"
    bcc="$(dpkg-query -W -f='${Version}' python3-bpfcc 2>/dev/null)"
    {
        echo "kernel=$(uname -r)"
        echo "kernel_version=$(uname -v)"
        echo "headers=$headers"
        echo "bcc=$bcc"
        echo "kprobe_pmu=$([ -e /sys/bus/event_source/devices/kprobe ] && echo yes || echo no)"
    } >"$1"
}

# ---- the qemu path -------------------------------------------------------------------------

mount_once() {  # mount_once TYPE SOURCE TARGET [OPTIONS]
    mountpoint -q "$3" && return 0
    mkdir -p "$3"
    mount -t "$1" ${4:+-o "$4"} "$2" "$3"
}

boot() {
    export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
    export AEGIS_VM=1 LANG=C.UTF-8
    mount_once devpts devpts /dev/pts gid=5,mode=620,ptmxmode=666
    mount_once tmpfs tmpfs /dev/shm mode=1777
    mount_once tmpfs tmpfs /tmp mode=1777
    mount_once cgroup2 cgroup2 /sys/fs/cgroup
    mount_once tracefs nodev /sys/kernel/tracing
    mount_once debugfs nodev /sys/kernel/debug
    mount_once bpf bpf /sys/fs/bpf
    ip link set lo up
    hostname aegis-vm
    mount_once 9p aegis-out /run/aegis/out trans=virtio,version=9p2000.L,msize=512000 || {
        say "cannot mount the results share"
        return 1
    }
    export AEGIS_VM_OUT=/run/aegis/out
    # shellcheck source=/dev/null
    . "$AEGIS_VM_OUT/request.env"   # AEGIS_VM_SRC, AEGIS_VM_TIMEOUT, AEGIS_VM_ARGS (array)
    # The checkout at the host's path (its virtualenv names that path), writable in memory:
    # the host's tree is never written to.
    mkdir -p /run/aegis/rw/upper /run/aegis/rw/work
    mount_once overlay overlay "$AEGIS_VM_SRC" \
        "lowerdir=/run/aegis/src,upperdir=/run/aegis/rw/upper,workdir=/run/aegis/rw/work" || {
        say "cannot overlay the checkout at $AEGIS_VM_SRC"
        return 1
    }
    echo "booted $(date -u +%s) uptime $(cut -d' ' -f1 /proc/uptime)" >"$AEGIS_VM_OUT/booted"
    cd "$AEGIS_VM_SRC" || return 1
    timeout -k 10 "$AEGIS_VM_TIMEOUT" "$AEGIS_VM_SRC/scripts/vm/guest.sh" "${AEGIS_VM_ARGS[@]}" \
        >"$AEGIS_VM_OUT/guest.log" 2>&1 </dev/null
    echo $? >"$AEGIS_VM_OUT/exit-code"
}

case "${1:-}" in
    boot)
        boot || echo 1 >"${AEGIS_VM_OUT:-/tmp}/exit-code"
        sync
        echo o >/proc/sysrq-trigger
        sleep 30
        ;;
    packages) packages ;;
    provision) provision ;;
    box) shift; make_box "$@" ;;
    test) shift; run_tests "$@" ;;
    run) shift; "$@" ;;
    *) echo "usage: $0 boot|packages|provision|box DISK KEY|test [PYTEST ARGS]|run CMD..." >&2; exit 2 ;;
esac
