"""Issue 16 item 7 through the real CLI: sizes, CPU and timeouts outside the documented ranges
(localsb/api/limits.py) are one line and exit 2, and nothing is created; the bounds themselves work."""
from __future__ import annotations

import json
import os

import pytest


@pytest.mark.parametrize("args,message", [
    (["--disk", "1"], "Invalid disk '1': must be at least 16Mi"),
    (["--memory", "99999999Ti"], "Invalid memory '99999999Ti': must be at most 64Gi"),
    (["--cpu", "999999999m"], "Invalid cpu '999999999m': must be at most 64000m"),
    (["--timeout", "0"], "Invalid timeout '0': must be at least 1s"),
    (["--memory", "-5Mi"], "Invalid memory '-5Mi': must be positive"),
    (["--cpu", "-1"], "Invalid cpu '-1': must be positive"),
])
def test_out_of_range_run_is_exit_2_one_line_and_creates_nothing(cli, state_dir, args, message):
    p = cli("sb", "run", *args, "--", "true")
    err = p.stderr.decode()
    assert p.returncode == 2, (p.stdout, err)
    assert err.startswith(f"✗ {message}") and err.count("\n") == 1, err
    p = cli("sb", "list", "--json", "--all", check=0)
    assert json.loads(p.stdout)["total"] == 0
    sandboxes = os.path.join(state_dir, "pool", "sandboxes")
    assert not os.path.isdir(sandboxes) or os.listdir(sandboxes) == []


def test_the_smallest_disk_and_memory_still_run_and_write(cli):
    p = cli("sb", "run", "--disk", "16Mi", "--memory", "16Mi", "--cpu", "10m", "--timeout", "60s", "--",
            "sh", "-c", "head -c 1048576 /dev/zero > /home/agentuity/f && wc -c < /home/agentuity/f")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout.strip() == b"1048576"
