"""``python -m tiffin.cli``: the same as the ``tiffin`` command."""

import sys

from tiffin.cli import skip_httpx_cli
from tiffin.cli.main import main

skip_httpx_cli()
sys.exit(main())
