"""``python -m paramseal``: the same CLI as the ``paramseal`` command."""

import sys

from .cli import main

sys.exit(main())
