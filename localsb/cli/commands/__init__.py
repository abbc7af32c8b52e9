"""One module per command group; each registers its own subparsers (tox-style).

Handlers are ``fn(ctx) -> exit code | None``: arguments to one backend call to output. Modules
import only argparse helpers at load time; everything heavier is imported inside handlers.
"""
