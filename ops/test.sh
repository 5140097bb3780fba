#!/usr/bin/env bash
# The test command: install into .venv from the pinned constraints, then lint, type-check,
# check the import rules of ARCHITECTURE.md and run every test, two at a time (pytest-xdist,
# one module per worker so that a module's fixtures start once; `-n 0` after it runs them
# in one process). Needs PostgreSQL, Redis and RabbitMQ (ops/services.sh starts them); each
# run keeps to a database, vhost and Redis db of its own, and the chaos tests break servers
# of their own.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -c constraints.txt -e '.[dev]'
# the services' client is its own distribution; the tests drive it against a real farm
.venv/bin/pip install --quiet -c constraints.txt -e producers/fluxfarm-client

.venv/bin/ruff format --check .
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/pytest --numprocesses 2 --dist loadscope "$@"
