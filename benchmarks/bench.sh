#!/bin/sh
# One command for the benchmark suite: benchmarks/bench.sh [--quick] [run.py options]
# Makes benchmarks/.venv (phantom editable with its redis extra, proxy.py, matplotlib, py-spy) on
# first use and, run as root with apt-get available, installs nginx, HAProxy, wrk and
# redis-server (for the shared-cache figures) when they are missing.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.installed" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -e "$root[redis,jwt]" proxy.py matplotlib py-spy
    touch "$venv/.installed"
fi
missing=""
for tool in nginx haproxy wrk redis-server; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
    else
        echo "benchmarks: missing$missing; install with: sudo apt-get install -y$missing" >&2
        echo "benchmarks: (the targets that need them are skipped; wrk is required)" >&2
    fi
fi
cd "$root"
exec "$venv/bin/python" -m benchmarks.run "$@"
