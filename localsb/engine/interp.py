"""A fresh Python for the engine's long-lived processes (a supervisor started by a threaded caller,
the port and SSH gateways): ``python -S`` running ``<module>.main()`` with this process's resolved
sys.path, so it starts without site-packages processing and finds exactly the code we run."""
from __future__ import annotations

import os
import sys

# What such a process needs of our environment; nothing else leaks in.
PASS_ENV = ("LOCALSB_TEST_CLOCK_FILE", "LOCALSB_STORAGE", "LOCALSB_DNS_SERVERS", "LOCALSB_NETWORK_ALLOW", "HOME")


def fresh_python(module: str, *argv: str) -> tuple[list, dict]:
    """(argv, env) for os.execve of a fresh interpreter running ``module``'s ``main()``."""
    args = [sys.executable, "-S", "-c", f"from {module} import main; main()", *argv]
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "PATH": os.environ.get("PATH", ""),
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.update({k: os.environ[k] for k in PASS_ENV if k in os.environ})
    return args, env
