"""Sandbox lifecycle on the local machine (see engine.py). Never imports argparse or aiohttp."""
from .engine import Engine, default_state_dir

__all__ = ["Engine", "default_state_dir"]
