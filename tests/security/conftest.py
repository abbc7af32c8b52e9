"""Security tests: one test per way out of a sandbox (hostile code inside, other local users,
clients of mockcloud and the gateways). Real sandboxes, as root, with the integration fixtures
(own state directory per test, the session-wide leak check)."""
from tests.integration.conftest import *  # noqa: F401,F403 - fixtures: state_dir, engine, cli
from tests.integration.conftest import leak_check, pytest_collection_modifyitems  # noqa: F401
