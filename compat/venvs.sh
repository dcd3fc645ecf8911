#!/usr/bin/env bash
# The pinned, unmodified E2B SDKs the compatibility scenarios (and the HTTPS test) drive, each
# in a venv of its own under compat/.
set -euo pipefail
cd "$(dirname "$0")"
for v in 2.63.0 2.50.0 2.45.1; do
  [ -x ".venv-$v/bin/pytest" ] || python3 -m venv ".venv-$v"
  ".venv-$v/bin/pip" install -q --disable-pip-version-check "e2b==$v" pytest
done
# The monitoring scenarios read /metrics with Prometheus' own text parser.
.venv-2.63.0/bin/pip install -q --disable-pip-version-check prometheus-client
[ -x .venv-interpreter/bin/pytest ] || python3 -m venv .venv-interpreter
.venv-interpreter/bin/pip install -q --disable-pip-version-check "e2b-code-interpreter==2.11.5" pytest
