#!/usr/bin/env bash
# Idempotent set-up for the stock-kernel test VM (scripts/vm.sh, `make vm-test`): qemu,
# qemu-img and sfdisk (for `make vm-box`), debootstrap and mkfs.ext4, from Debian's packages.
# Waits for another apt run's lock rather than failing. Exit 1 when something could not
# be installed (then the VM tests skip with the reason).
set -euo pipefail

say() { printf '[setup_vm] %s\n' "$*" >&2; }

# Inside the test VM itself (guest.sh sets AEGIS_VM): no VM in the VM.
[ -n "${AEGIS_VM:-}" ] && exit 0

declare -A TOOLS=([qemu-system-x86_64]=qemu-system-x86 [qemu-img]=qemu-utils
                  [debootstrap]=debootstrap [mkfs.ext4]=e2fsprogs [sfdisk]=fdisk)
todo=()
for tool in "${!TOOLS[@]}"; do
    command -v "$tool" >/dev/null || todo+=("${TOOLS[$tool]}")
done
[ "${#todo[@]}" -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    say "not a Debian-like system: install ${todo[*]} yourself"
    exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
say "installing: ${todo[*]}"
lock=(-o DPkg::Lock::Timeout=600)
$sudo env DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -qq --no-install-recommends \
    "${todo[@]}" >/dev/null
