#!/usr/bin/env bash
# Idempotent set-up shared by the README's commands and CI: a virtual environment with both connectors and the
# test tools installed, and the kinesis-mock emulator from npm. Needs Python 3.11 and Node 20 (npm) on PATH.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
# Reinstall only when setup.py changed since the last successful install.
stamp=".venv/.installed-$(sha1sum setup.py | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python packages (about 2 minutes on a fresh machine)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[tests]"
  rm -f .venv/.installed-* && touch "$stamp"
fi
if [ ! -f .cache/node/node_modules/kinesis-local/main.js ]; then
  echo "bootstrap: installing kinesis-local@0.6.2 (kinesis-mock) from npm"
  mkdir -p .cache/node
  npm install --silent --no-audit --no-fund --prefix .cache/node kinesis-local@0.6.2
fi
# PyAirbyte in its own venv (it pins duckdb 1.4.3 and pyarrow < 22, which our packages outgrew): the tests read the
# source into PyAirbyte's DuckDB cache with it, as an Airbyte user would (integration_tests/test_pyairbyte.py), and
# the benchmark compares against its cache.
PYAIRBYTE_SPEC="airbyte==0.71.*"
if [ ! -f .cache/pyairbyte-venv/.installed ] || [ "$(cat .cache/pyairbyte-venv/.installed)" != "$PYAIRBYTE_SPEC" ]; then
  echo "bootstrap: installing $PYAIRBYTE_SPEC into .cache/pyairbyte-venv (about a minute)"
  rm -rf .cache/pyairbyte-venv
  "$PYTHON" -m venv .cache/pyairbyte-venv
  .cache/pyairbyte-venv/bin/python -m pip install --quiet --disable-pip-version-check "$PYAIRBYTE_SPEC"
  echo "$PYAIRBYTE_SPEC" > .cache/pyairbyte-venv/.installed
fi
# The SSH tunnel tests run a real OpenSSH server unprivileged on 127.0.0.1 (integration_tests/ssh_server.py), with
# nss_wrapper supplying its login user: install both when missing (root only; no ssh service is enabled or started).
have_nss_wrapper() {
  local lib
  for lib in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so; do [ -e "$lib" ] && return 0; done
  return 1
}
if [ ! -x /usr/sbin/sshd ] || ! have_nss_wrapper; then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing openssh-server and libnss-wrapper (apt) for the SSH tunnel tests"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server libnss-wrapper openssl >/dev/null
  else
    echo "bootstrap: openssh-server or libnss-wrapper missing and not root: the SSH tunnel tests will be skipped"
  fi
fi
