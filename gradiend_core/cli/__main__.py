"""``python -m gradiend_core.cli``: the ``gradiend-core`` command line."""

import sys

from .main import main

sys.exit(main())
