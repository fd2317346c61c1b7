#!/usr/bin/env bash
# The whole test suite: unit tests (in-process moto, botocore Stubber) and integration tests against servers the
# fixtures start on 127.0.0.1 and stop again (kinesis-mock from npm, a throwaway PostgreSQL as an unprivileged user).
# Extra arguments go to pytest, e.g. `scripts/test.sh -k lineage`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
export KINESIS_LOCAL_DIR="$ROOT/.cache/node/node_modules/kinesis-local"
export PATH="$ROOT/.venv/bin:$PATH"  # the console scripts, as an installed user would have them
exec .venv/bin/python -m pytest "$@"
