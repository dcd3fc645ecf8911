#!/usr/bin/env bash
# The dashboard's browser test: Playwright for Python driving the system's Chromium
# (apt-get install chromium; Playwright's own browser download is never used), pytest, and the
# E2B SDK that makes the sandboxes the browser looks at. Venv: compat/.venv-dashboard.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-dashboard/bin/pytest ] || python3 -m venv .venv-dashboard
# PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: the pip package has no download step, but be explicit.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 .venv-dashboard/bin/pip install -q --disable-pip-version-check \
  "playwright==1.65.3" "pytest==9.2.0" "e2b==2.63.0"
command -v chromium >/dev/null || echo "note: no chromium on PATH (apt-get install -y chromium)" >&2
