#!/usr/bin/env bash
# Start MLflow server, Prefect server and a process worker on loopback (idempotent); see infra/README.md.
#   infra/start.sh                  # all three
#   infra/start.sh mlflow           # only some: mlflow, prefect-server, prefect-worker
#   infra/start.sh --mode cluster   # PostgreSQL under both servers, MODELCORE_WORKERS workers (or MODELCORE_INFRA_MODE=cluster)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
cd "$repo"
exec "$python" -m infra.servers start "$@"
