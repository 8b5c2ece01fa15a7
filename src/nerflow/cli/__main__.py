"""``python -m nerflow.cli``: the nerflow command (how torchrun starts each training process)."""

import sys

from nerflow.cli.commands import main

sys.exit(main())
