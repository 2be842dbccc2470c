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
