#!/usr/bin/env bash
# The test command: install into .venv from the pinned constraints, then lint, type-check,
# check the import rules of ARCHITECTURE.md and run every test. Needs PostgreSQL, Redis and
# RabbitMQ (ops/services.sh starts them).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -c constraints.txt -e '.[dev]'

.venv/bin/ruff format --check .
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/pytest "$@"
