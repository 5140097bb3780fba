"""`python -m bench` from a checkout: the same as `fluxfarm bench`."""

import sys

from bench.main import main

sys.exit(main())
