#!/usr/bin/env bash
# Refresh requirements/lock.txt, the exact versions scripts/setup.sh installs, from pyproject.toml:
#   bash scripts/lock.sh
# It resolves the newest versions pyproject.toml allows today (pip-tools' pip-compile, in a throwaway venv),
# then installs that set into a brand-new venv and runs the whole test suite there. The new lock replaces the
# old one only if every test passes; until then, and otherwise, requirements/lock.txt is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
python3 -m venv "$work/tools"
"$work/tools/bin/pip" install -q "pip-tools==7.6.2"
CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" "$work/tools/bin/pip-compile" -q --upgrade --strip-extras --extra test --extra yaml --extra export --extra tensorboard --unsafe-package torch \
  --no-emit-index-url --no-emit-find-links -o "$work/lock.txt" pyproject.toml requirements/pins.in
python3 -m venv "$work/test"
if ( . "$work/test/bin/activate" && VAEKIT_LOCK="$work/lock.txt" bash scripts/setup.sh --test && python3 -m pytest ); then
  cp "$work/lock.txt" requirements/lock.txt
  rm -rf "$work"
  echo "lock: requirements/lock.txt refreshed and tested; review 'git diff requirements/lock.txt' and commit it"
else
  echo "lock: the tests failed with the refreshed set; requirements/lock.txt is unchanged (new set: $work/lock.txt)" >&2
  exit 1
fi
