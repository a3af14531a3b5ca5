"""Herald: a high-throughput async dispatch engine for SMS mailings."""

from engine.errors import HeraldError

__all__ = ["HeraldError", "__version__"]

__version__ = "0.1.0"
