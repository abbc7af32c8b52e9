"""Security tests: one test per way out of a sandbox (hostile code inside, other local users,
clients of mockcloud and the gateways). Real sandboxes, as root, with the integration fixtures
(own state directory per test, the session-wide leak check)."""
from tests.integration.conftest import (CLI, cli, engine, leak_check, pytest_collection_modifyitems,
                                        state_dir)

__all__ = ["CLI", "cli", "engine", "leak_check", "pytest_collection_modifyitems", "state_dir"]
