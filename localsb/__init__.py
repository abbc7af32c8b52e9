"""localsb: the Agentuity cloud sandbox command set on the local machine."""
__version__ = "0.1.0"
