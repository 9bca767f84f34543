"""``python -m modelcore``: the ``modelcore`` command (see :mod:`modelcore.cli`)."""

import sys

from modelcore.cli import main

sys.exit(main())
