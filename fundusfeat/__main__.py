"""``python -m fundusfeat``: the command line (also under ``torchrun``)."""

import sys

from fundusfeat.cli import main

sys.exit(main())
