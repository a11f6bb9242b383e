"""``python -m pyro_lvm ...`` runs the ``pyro-lvm`` command."""

import sys

from .cli import main

sys.exit(main())
