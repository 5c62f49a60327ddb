"""``python -m nearsight`` (and ``torchrun -m nearsight``): the command-line interface."""

import sys

from .cli.main import main

sys.exit(main())
