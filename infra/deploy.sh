#!/usr/bin/env bash
# Register deployments/prefect.yaml on the running Prefect server, each deployment bounded by its pool's
# concurrency limit (MODELCORE_POOL_LIMIT in cluster mode); see infra/README.md.
#   infra/deploy.sh                  # local mode
#   infra/deploy.sh --mode cluster   # or MODELCORE_INFRA_MODE=cluster
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
cd "$repo"
exec "$python" -m infra.servers deploy "$@"
