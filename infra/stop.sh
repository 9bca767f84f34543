#!/usr/bin/env bash
# Stop what infra/start.sh started: the workers first, then the servers, then PostgreSQL in cluster mode
# (SIGINT, then SIGKILL after 20 s). `--mode cluster` or MODELCORE_INFRA_MODE=cluster for the cluster mode.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
cd "$repo"
exec "$python" -m infra.servers stop "$@"
