"""The ``nerflow`` command (commands), its predict and score commands (predict) and the main job's
closing summary (summary)."""

from nerflow.cli.commands import main

__all__ = ["main"]
