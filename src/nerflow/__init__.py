"""nerflow: a labelled NER corpus in, a promoted and served token-classification model out.

Each pipeline step is a function in its own module taking explicit input/output paths and
one params section (a dict); the CLI, DVC stages, KFP components and the BentoML service
are thin adapters over these functions.
"""

__version__ = "0.1.0"


class NerflowError(Exception):
    """A problem with the user's input or configuration: reported as one line, exit code 2."""
