#!/usr/bin/env bash
# Prints the build stamp shared by the Python package and the hooks library,
# so that `aegis-mcp --version` can tell when the two were built apart.
# Usage: build_info.sh time|git
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in
    time) date -u +"%Y-%m-%d %H:%M:%S UTC" ;;
    git) git -C "$ROOT" rev-parse --short=7 HEAD 2>/dev/null || echo unknown ;;
    *) echo "usage: $0 time|git" >&2; exit 2 ;;
esac
