#!/usr/bin/env bash
# Build the documentation site into site/ with warnings as errors.
# Needs the docs extra: pip install -e '.[docs]'  (mkdocs, mkdocs-material, mkdocstrings[python]).
# The pages' python blocks are executed by the tests (pytest tests/test_docs.py), not here.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_MKDOCS_2_WARNING=1  # material's end-of-life banner is not a build problem
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
exec "$PY" -m mkdocs build --strict --site-dir "${1:-site}"
