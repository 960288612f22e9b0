#!/usr/bin/env bash
# The side-by-side benchmark: builds verifyd in release mode, then runs
# loadtest/compare.py, which prints one table of every RPC as a ratio to the
# health check measured in the same run (docs/performance.md). Needs two
# cores, taskset (util-linux) and python3; redis-server adds the Redis
# figures and h2load (nghttp2-client) an independent run of the baseline.
# Settings: see the top of compare.py.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

for tool in taskset python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "compare.sh: $tool is missing (Debian: apt-get install util-linux python3)" >&2
        exit 1
    fi
done
if (($(nproc) < 2)); then
    echo "compare.sh: needs two cores (one for verifyd, one for the load generator)" >&2
    exit 1
fi
if ! command -v redis-server >/dev/null 2>&1; then
    echo "compare.sh: redis-server is not installed: the Redis-store run is skipped" >&2
fi
if ! command -v h2load >/dev/null 2>&1; then
    echo "compare.sh: h2load is not installed (Debian: nghttp2-client): no independent check of the baseline" >&2
fi

echo "==> cargo build --release --locked" >&2
cargo build --release --locked --bin verifyd
exec python3 loadtest/compare.py
