"""nerflow: a labelled corpus in (named-entity recognition or text classification), a gated,
promoted and served model out.

Each pipeline step is a function over explicit input/output paths and one params section
(nerflow.steps), reaching what differs between the tasks through nerflow.tasks; the CLI, DVC
stages, KFP components and the BentoML service are thin adapters over them. The layers are
described in docs/design/architecture.md and checked by import-linter.
"""

__version__ = "0.1.0"


class NerflowError(Exception):
    """A problem with the user's input or configuration: reported as one line, exit code 2."""
