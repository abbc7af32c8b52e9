"""Is this command run by an AI coding agent? The official CLI's answer, reproduced.

The official CLI (@agentuity/cli ``agent-detection.js``) prints plain markers instead of symbols
(``[OK]`` for ✓, ``[ERROR]`` for ✗, ...) and no colour when it decides that a coding agent runs it,
so that the agent reads clean text. It decides in this order:

1. ``AGENTUITY_AGENT_MODE``: ``false``, ``0`` or ``none`` mean "no agent"; any other value names one;
2. ``WARP_AGENT_MODE=true`` means Warp;
3. stdin a terminal means a human is typing: no agent;
4. otherwise the parent processes (up to 10) are looked at: an executable whose name, or a command
   line word that looks like an executable, is a known agent's (``claude``, ``codex``, ...).

localsb answers the same way, so the same command prints the same text under both CLIs wherever it
runs. Tests pin ``AGENTUITY_AGENT_MODE`` so that their expectations do not depend on who runs them.
"""
from __future__ import annotations

import os
import re

# (process name, agent id): the official CLI's list, in its order (more specific first).
KNOWN_AGENTS = (
    ("opencode", "opencode"), ("codex", "codex"), ("cursor-agent", "cursor"),
    ("claude", "claude-code"), ("copilot", "copilot"), ("gemini", "gemini"), ("cline", "cline"),
    ("roo-code", "roo"), ("windsurf", "windsurf"), ("zed", "zed"), ("amp", "amp"), ("warp", "warp"),
    ("pi", "pi"), ("coder", "coder"),
)
MAX_DEPTH = 10
_WORD_SPLIT = re.compile(r"[^a-z0-9]+", re.IGNORECASE)

# Plain markers in agent mode, symbols otherwise (tui.ts getIcons).
AGENT_ICONS = {"success": "[OK]", "error": "[ERROR]", "warning": "[WARN]", "info": "[INFO]",
               "bullet": "-", "arrow": "->"}
HUMAN_ICONS = {"success": "✓", "error": "✗", "warning": "⚠", "info": "ℹ", "bullet": "•", "arrow": "→"}


def _matches(basename: str, process_name: str) -> bool:
    return basename == process_name or process_name in _WORD_SPLIT.split(basename)


def match_path(path: str) -> str | None:
    """The agent whose process name is this executable's basename (or a word of it)."""
    basename = re.split(r"[/\\]", path)[-1].lower()
    for process_name, agent in KNOWN_AGENTS:
        if _matches(basename, process_name):
            return agent
    return None


def match_cmdline(cmdline: str) -> str | None:
    """The agent named by a command line word that looks like an executable: argv[0], an absolute
    path, or a short bare word; never ``K=V``. Names of two letters or fewer count only as argv[0]
    or a path, so an ordinary argument such as ``pi`` is not taken for the Pi agent."""
    parts = re.split(r"\s+", cmdline.strip())
    for i, part in enumerate(parts):
        if not part or "=" in part:
            continue
        is_path = part.startswith("/")
        if not (is_path or ("/" not in part and len(part) < 50)):
            continue
        exec_position = i == 0 or is_path
        basename = re.split(r"[/\\]", part)[-1].lower()
        for process_name, agent in KNOWN_AGENTS:
            if len(process_name) <= 2 and not exec_position:
                continue
            if _matches(basename, process_name):
                return agent
    return None


def _parent_pid(pid: int, proc: str) -> int | None:
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            stat = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split(" ")
    try:
        ppid = int(fields[1])
    except (IndexError, ValueError):
        return None
    return ppid if ppid > 1 else None


def agent_in_ancestors(ppid: int | None = None, proc: str = "/proc") -> str | None:
    """Walk up from ``ppid`` (default: this process's parent) looking for a known agent."""
    pid = os.getppid() if ppid is None else ppid
    for _ in range(MAX_DEPTH):
        if not pid or pid <= 1:
            return None
        try:
            agent = match_path(os.readlink(f"{proc}/{pid}/exe"))
        except OSError:
            agent = None
        if agent:
            return agent
        try:
            with open(f"{proc}/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            cmdline = ""
        if cmdline:
            agent = match_cmdline(cmdline)
            if agent:
                return agent
        pid = _parent_pid(pid, proc)
    return None


def executing_agent(env, stdin_is_tty: bool) -> str | None:
    """The agent running this command, or None for a human (or nobody in particular)."""
    mode = env.get("AGENTUITY_AGENT_MODE")
    if mode:
        return None if mode in ("false", "0", "none") else mode
    if env.get("WARP_AGENT_MODE") == "true":
        return "warp"
    if stdin_is_tty:
        return None
    return agent_in_ancestors()
