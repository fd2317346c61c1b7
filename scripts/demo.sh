#!/usr/bin/env bash
# The demo in one command: sets up .venv and the emulator if needed, then runs scripts/demo.py (about a minute).
# Run it twice: the second run shows an incremental sync. `scripts/demo.sh --fresh` starts from scratch.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ "${1:-}" = "--fresh" ]; then rm -rf .cache/demo; fi
bash scripts/bootstrap.sh
export KINESIS_LOCAL_DIR="$ROOT/.cache/node/node_modules/kinesis-local"
exec .venv/bin/python scripts/demo.py
