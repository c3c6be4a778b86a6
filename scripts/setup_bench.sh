#!/usr/bin/env bash
# Idempotent set-up of the yardsticks `make bench` measures aegis-mcp against: Anthropic's
# sandbox-runtime (`srt`, from the npm registry, pinned) and what it runs on Linux (bubblewrap,
# socat and ripgrep, from Debian), and bpftool for the BPF programs' own run time (bpf_stats).
# Downloaded once per machine into a cache outside the repository.
#
#   scripts/setup_bench.sh           install what is missing
#   scripts/setup_bench.sh --print   print the path of srt and exit
#
# Cache: $AEGIS_BENCH_CACHE, else ~/.cache/aegis-mcp/bench. A failure is said and leaves
# the rows that need srt skipped, with the reason, by bench/run.py.
set -uo pipefail

SRT_PACKAGE="@anthropic-ai/sandbox-runtime"
SRT_VERSION="0.0.83"
APT_PACKAGES=(bubblewrap socat ripgrep bpftool)
CACHE="${AEGIS_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aegis-mcp/bench}"
PREFIX="$CACHE/srt-$SRT_VERSION"
SRT="$PREFIX/node_modules/.bin/srt"

if [ "${1:-}" = "--print" ]; then
    echo "$SRT"
    exit 0
fi

say() { printf '[setup_bench] %s\n' "$*" >&2; }
status=0

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]} from Debian"
        # Another engineer's install may hold the dpkg lock for a while: wait for it.
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
            { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 update -qq &&
              DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq "${missing[@]}" >/dev/null; } ||
            { say "could not install ${missing[*]}"; status=1; }
    else
        say "missing ${missing[*]} (install them as root)"
        status=1
    fi
fi

if [ ! -x "$SRT" ]; then
    if command -v npm >/dev/null; then
        say "installing $SRT_PACKAGE@$SRT_VERSION into $PREFIX"
        mkdir -p "$PREFIX"
        npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error \
            "$SRT_PACKAGE@$SRT_VERSION" >/dev/null 2>&1 || { say "npm install of $SRT_PACKAGE failed"; status=1; }
    else
        say "npm is missing: cannot install $SRT_PACKAGE"
        status=1
    fi
fi
exit "$status"
