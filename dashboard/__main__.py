"""``python -m dashboard``: start the dashboard server (see :mod:`dashboard.launch`)."""

import sys

from dashboard.launch import main

sys.exit(main())
