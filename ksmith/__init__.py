"""ksmith: a declarative, data-first benchmark for knowledge editing and unlearning.

`import ksmith` stays light: heavy modules (torch, transformers, datasets) are imported by the
sub-packages that need them, never here.
"""

from ksmith.errors import KsmithError, SpecError

__version__ = "0.1.0"

__all__ = ["KsmithError", "SpecError", "__version__"]
