"""The library's version (also written into every save file)."""

__version__ = "0.1.0"
