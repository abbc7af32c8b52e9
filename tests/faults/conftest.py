"""Fault tests (issue 16): bad input at the edge, damaged state, on real sandboxes as root, with the
integration fixtures (own state directory per test, the session-wide leak check)."""
from tests.integration.conftest import (CLI, cli, engine, leak_check, pytest_collection_modifyitems,
                                        state_dir)

__all__ = ["CLI", "cli", "engine", "leak_check", "pytest_collection_modifyitems", "state_dir"]
