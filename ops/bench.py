"""`fluxfarm bench` as a script: .venv/bin/python ops/bench.py --json .fluxfarm/bench.json"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# the repo root goes on the path first, so the script runs from a checkout without install
from bench.main import main

if __name__ == "__main__":
    sys.exit(main())
