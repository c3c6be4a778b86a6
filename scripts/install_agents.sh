#!/usr/bin/env bash
# Idempotent install of the real agent CLIs the end-to-end tests (tests/e2e/) run,
# each at a pinned version, from the npm registry or PyPI, into a cache outside the
# repository: downloaded once per machine, shared by every clone and worktree.
#
#   scripts/install_agents.sh           install what is missing
#   scripts/install_agents.sh --print   print the cache's bin directory and exit
#
# Cache: $AEGIS_AGENTS_CACHE, else /var/cache/aegis-mcp/agents for root (so that a
# user the tests drop privileges to can run the CLIs too), else
# ~/.cache/aegis-mcp/agents. Each CLI goes to NAME-VERSION/; BIN/NAME links the
# installed ones. An install that fails leaves NAME-VERSION.failed with the reason,
# and the tests of that agent skip with it; the next run tries again. A version
# change here is the whole upgrade: the old directory is left for `rm -rf`.
set -uo pipefail

# name  kind  package            version
AGENTS=(
    "claude npm @anthropic-ai/claude-code 2.1.332"
    "codex  npm @openai/codex             0.171.0"
    "gemini npm @google/gemini-cli        0.61.0"
    "aider  pypi aider-chat               0.86.2"
)
NODE_MAJOR_MIN=20 # gemini-cli's engines field

if [ -n "${AEGIS_AGENTS_CACHE:-}" ]; then
    CACHE="$AEGIS_AGENTS_CACHE"
elif [ "$(id -u)" -eq 0 ]; then
    CACHE=/var/cache/aegis-mcp/agents
else
    CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/aegis-mcp/agents"
fi
BIN="$CACHE/bin"
PYTHON="${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}"

if [ "${1:-}" = "--print" ]; then
    echo "$BIN"
    exit 0
fi

say() { printf '[install_agents] %s\n' "$*" >&2; }

mkdir -p "$BIN"
chmod 0755 "$CACHE" "$BIN" 2>/dev/null || true

node_ok() {
    command -v node >/dev/null && command -v npm >/dev/null || return 1
    local major
    major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null)" || return 1
    [ "$major" -ge "$NODE_MAJOR_MIN" ]
}

ensure_node() {
    node_ok && return 0
    command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ] || return 1
    say "installing nodejs and npm from Debian"
    # Another engineer's install may hold the dpkg lock for a while: wait for it.
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq nodejs npm >/dev/null
    node_ok
}

install_npm() { # dir package version
    ensure_node || { echo "Node.js >= $NODE_MAJOR_MIN with npm is needed and could not be installed"; return 1; }
    npm install --prefix "$1" --no-audit --no-fund --loglevel=error "$2@$3" 2>&1 | tail -n 20
    return "${PIPESTATUS[0]}"
}

install_pypi() { # dir package version
    "$PYTHON" -m venv "$1" 2>&1 | tail -n 5 || return 1
    "$1/bin/pip" install -q --disable-pip-version-check "$2==$3" 2>&1 | grep -v "^WARNING: Location" | tail -n 20
    return "${PIPESTATUS[0]}"
}

entry_point() { # name dir kind
    case "$3" in
    npm) echo "$2/node_modules/.bin/$1" ;;
    pypi) echo "$2/bin/$1" ;;
    esac
}

status=0
for line in "${AGENTS[@]}"; do
    read -r name kind package version <<<"$line"
    dir="$CACHE/$name-$version"
    exe="$(entry_point "$name" "$dir" "$kind")"
    if [ ! -f "$dir/.installed" ]; then
        say "installing $package $version into $dir"
        rm -rf "$dir" "$dir.failed"
        mkdir -p "$dir"
        if output="$("install_$kind" "$dir" "$package" "$version")" && [ -x "$exe" ]; then
            # Readable (not writable) by the users the tests drop privileges to.
            chmod -R go+rX,go-w "$dir"
            touch "$dir/.installed"
        else
            printf 'installing %s %s failed:\n%s\n' "$package" "$version" "$output" >"$dir.failed"
            say "$(head -n 3 "$dir.failed")"
            rm -rf "$dir"
            status=1
            continue
        fi
    fi
    ln -sfn "$exe" "$BIN/$name"
done
exit "$status"
