"""The installed coyo-db's version, in one place (a leaf: anything may import it)."""

__version__ = "0.1.0"
