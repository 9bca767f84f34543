#!/usr/bin/env bash
# Start MLflow server, Prefect server and a process worker on loopback (idempotent); see infra/README.md.
#   infra/start.sh                  # all three
#   infra/start.sh mlflow           # only some: mlflow, prefect-server, prefect-worker
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
cd "$repo"
exec "$python" -m infra.servers start "$@"
