#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: ./.venv with the pinned dependencies (requirements.lock,
# the spaCy English model package included) and ppt-labels itself in editable mode. A second run
# with unchanged pins returns at once.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.ppt-labels-installed
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.lock
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" >"$stamp"
fi
# Chromium renders the run report in tests/e2e/test_report.py, which skips (and says why) without
# it. Debian's package (about 30 s here); best effort: where apt-get is missing or not ours to run,
# set-up goes on with a warning.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  install_chromium() {
    command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] || return 1
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get install -y -q chromium >/dev/null 2>&1 ||
      { timeout 600 apt-get update -q >/dev/null 2>&1 &&
        timeout 600 apt-get install -y -q chromium >/dev/null 2>&1; }
  }
  install_chromium || echo "setup.sh: chromium not installed (needs root and apt-get);" \
    "tests/e2e/test_report.py's browser check will be skipped" >&2
fi
