"""cgroup driver, decided per capability (see driver.py)."""
from .driver import CgroupDriver, SandboxCgroup, Limits, detect

__all__ = ["CgroupDriver", "SandboxCgroup", "Limits", "detect"]
