"""pixelrelay: the composition root (command line and the development stack)."""

__version__ = "0.1.0"
