#!/usr/bin/env bash
# Idempotent set-up of everything aegis-mcp needs on a Debian/Ubuntu machine:
# system packages, the project's virtualenv (editable install), the build
# stamp and the hooks library. Safe to run again: it only does what is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AEGIS_VENV:-$ROOT/.venv}"
# Debian's own interpreter, not a per-user one (pyenv under /root): agents that
# drop to another user must still be able to run the venv's python.
PYTHON="${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}"
APT_PACKAGES=(gcc make python3-venv tmux procps git nftables iproute2)

say() { printf '[bootstrap] %s\n' "$*" >&2; }

missing_packages() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || echo "$pkg"
    done
}

install_system_packages() {
    command -v dpkg-query >/dev/null || { say "not a Debian-like system: install ${APT_PACKAGES[*]} yourself"; return; }
    mapfile -t todo < <(missing_packages "${APT_PACKAGES[@]}")
    [ "${#todo[@]}" -eq 0 ] && return
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    say "installing system packages: ${todo[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${todo[@]}" >/dev/null
}

install_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating virtualenv $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.aegis-installed"
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        say "installing aegis-mcp and its dependencies into $VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[dev]"
        touch "$stamp"
    fi
}

install_system_packages
# eBPF is optional: without it --netmon falls back to preload and says why.
"$ROOT/scripts/setup_bpf.sh" || say "eBPF set-up incomplete: --netmon falls back to preload"
# The stock-kernel test VM is optional too: without qemu its tests skip and say why.
"$ROOT/scripts/setup_vm.sh" || say "VM set-up incomplete: the VM tests (tests/test_vm.py) skip"
install_venv
# The real agent CLIs for tests/e2e/: a failed install skips those tests, with the reason.
"$ROOT/scripts/install_agents.sh" || say "some agent CLIs could not be installed: their end-to-end tests skip"
make -C "$ROOT" --no-print-directory build VENV="$VENV" >/dev/null
# Containers too (podman, docker.io, the rootless test user, the base image): without
# them the container tests skip and say why; in CI (CI=true) they must run, so a failed
# set-up fails here.
if ! "$ROOT/scripts/setup_containers.sh" "$VENV"; then
    case "${CI:-}" in true | 1) say "CI=true: the container set-up must succeed"; exit 1 ;; esac
    say "container set-up incomplete: see above"
fi
say "ready: $VENV/bin/aegis-mcp"
