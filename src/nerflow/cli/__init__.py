"""The ``nerflow`` command (main), its predict and score commands (predict) and the main job's
closing summary (summary)."""

from nerflow.cli.main import main

__all__ = ["main"]
