#!/usr/bin/env bash
# Stop what infra/start.sh started: the worker first, then the servers (SIGINT, then SIGKILL after 20 s).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
cd "$repo"
exec "$python" -m infra.servers stop "$@"
