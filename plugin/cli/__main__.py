"""``python -m tiffin.cli``: the same as the ``tiffin`` command."""

import sys

from tiffin.cli.main import main

sys.exit(main())
