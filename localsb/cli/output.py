"""Everything the CLI shows: the only module that writes to the terminal.

The formats follow the official CLI (reference/hosted-api.md §4.1): ``✓ ℹ ⚠ ✗ •`` lines on stderr,
tables and plain lines on stdout, ``--json`` output as ``JSON.stringify(x, null, 2)``, box tables in
the cli-table3 style that fall back to a vertical layout when wider than the terminal, and the
``[y/N]`` confirmation prompt that answers "no" by itself when stdin is not a terminal. Run by an AI
coding agent (cli/agent.py), the markers are plain (``[OK] [INFO] [WARN] [ERROR] -``) and there is
no colour, as the official CLI does.
"""
from __future__ import annotations

import os

_COLORS = {"success": "\x1b[32m", "error": "\x1b[31m", "warning": "\x1b[33m", "info": "\x1b[36m",
           "muted": "\x1b[90m", "bold": "\x1b[1m", "link": "\x1b[34;4m"}
_RESET = "\x1b[0m"


def to_json(obj) -> str:
    """JSON.stringify(obj, null, 2): two-space indent, raw UTF-8, no trailing newline."""
    import json as _json
    return _json.dumps(obj, indent=2, ensure_ascii=False)


def format_bytes(n) -> str:
    """tui.formatBytes: '0 B', 'N B' below 1024, else two decimals in KB, MB or GB."""
    n = n or 0
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
    return f"{n:.2f} GB"  # pragma: no cover - loop always returns


def format_size_1(n, byte_word: str = "B") -> str:
    """The one-decimal size of fs ls and fs download: 'N B', 'x.x KB', 'x.x MB', 'x.x GB'."""
    n = n or 0
    if n < 1024:
        return f"{int(n)} {byte_word}"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}"
    return f"{n:.1f} GB"  # pragma: no cover


def format_number(n) -> str:
    """formatNumber of the stats command: >= 1e6 -> 'x.xM', >= 1e3 -> 'x.xK'."""
    n = n or 0
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 1_000:
        return f"{n / 1_000:.1f}K"
    return str(int(n)) if float(n).is_integer() else str(n)


def plural(n: int, singular: str, plural_: str) -> str:
    return singular if n == 1 else plural_


def display_width(text: str) -> int:
    """Terminal columns of ``text``: ANSI escapes count 0, wide East Asian characters 2."""
    import unicodedata
    width = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            end = text.find("m", i)
            if end != -1:
                i = end + 1
                continue
        if unicodedata.combining(ch):
            pass
        elif unicodedata.east_asian_width(ch) in ("W", "F"):
            width += 2
        else:
            width += 1
        i += 1
    return width


def _pad(text: str, width: int, align: str = "left") -> str:
    gap = width - display_width(text)
    if gap <= 0:
        return text
    if align == "right":
        return " " * gap + text
    if align == "center":
        left = gap // 2
        return " " * left + text + " " * (gap - left)
    return text + " " * gap


class _TextToBinary:
    """A binary sink over a text stream without ``.buffer`` (e.g. io.StringIO in tests)."""

    def __init__(self, text_stream):
        import codecs
        self._stream = text_stream
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes) -> int:
        self._stream.write(self._decoder.decode(bytes(data)))
        return len(data)

    def flush(self) -> None:
        self._stream.flush()


class Output:
    """Human or JSON rendering onto injected stdout/stderr/stdin (httpie-style environment)."""

    def __init__(self, stdout, stderr, stdin=None, *, json: bool = False, quiet: bool = False,
                 color: str = "auto", env=None):
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        self.json_mode = json
        self.quiet = quiet
        env = os.environ if env is None else env
        self._columns = None
        self._env = env
        self._agent = False   # not decided yet: the process walk runs only when it matters
        if json or color == "never":
            self.color = False
        elif color == "always" or env.get("FORCE_COLOR") == "1":
            self.color = True
        else:
            self.color = (_isatty(stdout) and not env.get("NO_COLOR") and not env.get("CI")
                          and env.get("TERM") != "dumb" and not self.agent)

    @property
    def agent(self) -> str | None:
        """The AI coding agent running this command (cli/agent.py), or None."""
        if self._agent is False:
            from .agent import executing_agent
            self._agent = executing_agent(self._env, _isatty(self.stdin))
        return self._agent

    def icon(self, kind: str) -> str:
        from .agent import AGENT_ICONS, HUMAN_ICONS
        return (AGENT_ICONS if self.agent else HUMAN_ICONS)[kind]

    # colours -------------------------------------------------------------------------------------
    def paint(self, text: str, color: str) -> str:
        if not self.color or not text:
            return text
        return f"{_COLORS[color]}{text}{_RESET}"

    def bold(self, text: str) -> str:
        return self.paint(text, "bold")

    def muted(self, text: str) -> str:
        return self.paint(text, "muted")

    def status_color(self, status: str) -> str:
        color = {"running": "success", "completed": "success", "idle": "warning",
                 "failed": "error", "timeout": "error"}.get(status, "muted")
        return self.paint(status, color)

    # stderr message lines ------------------------------------------------------------------------
    def _message(self, kind: str, message: str, color: str | None = None) -> None:
        line = f"{self.icon(kind)} {message}"
        self.stderr.write(self.paint(line, color or kind) + "\n")
        self.stderr.flush()

    def success(self, message: str) -> None:
        if not self.quiet:
            self._message("success", message)

    def info(self, message: str) -> None:
        if not self.quiet:
            self._message("info", message)

    def warning(self, message: str) -> None:
        self._message("warning", message)

    def error(self, message: str) -> None:
        self._message("error", message)

    def bullet(self, message: str, indent: str = "") -> None:
        self.stderr.write(f"{indent}{self.icon('bullet')} {message}\n")
        self.stderr.flush()

    def err_line(self, text: str = "") -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()

    # stdout --------------------------------------------------------------------------------------
    def line(self, text: str = "") -> None:
        self.stdout.write(text + "\n")

    def write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def json(self, obj) -> None:
        self.stdout.write(to_json(obj) + "\n")
        self.stdout.flush()

    def json_error(self, code: str, message: str, exit_code: int) -> None:
        self.stderr.write(to_json({"error": {"code": code, "message": message, "exitCode": exit_code}}) + "\n")
        self.stderr.flush()

    def flush(self) -> None:
        for s in (self.stdout, self.stderr):
            try:
                s.flush()
            except (ValueError, OSError):
                pass

    # binary streams for run/exec/fs output ---------------------------------------------------------
    def binary_stdout(self):
        self.stdout.flush()
        return getattr(self.stdout, "buffer", None) or _TextToBinary(self.stdout)

    def binary_stderr(self):
        self.stderr.flush()
        return getattr(self.stderr, "buffer", None) or _TextToBinary(self.stderr)

    def binary_stdin(self):
        """stdin for a one-shot run: only when it is not a terminal, as the official CLI does."""
        if self.stdin is None or _isatty(self.stdin):
            return None
        return getattr(self.stdin, "buffer", self.stdin)

    # tables --------------------------------------------------------------------------------------
    def columns(self) -> int:
        """Terminal width; 80 when unknown (not a terminal), as process.stdout.columns does."""
        if self._columns is None:
            self._columns = 80
            if _isatty(self.stdout):
                try:
                    self._columns = os.get_terminal_size(self.stdout.fileno()).columns
                except (OSError, ValueError, AttributeError):
                    pass
        return self._columns

    def render_box(self, headers: list[str], rows: list[list], align: list[str] | None = None) -> str:
        align = align or ["left"] * len(headers)
        cells = [["" if v is None else str(v) for v in row] for row in rows]
        heads = [self.paint(h, "info") for h in headers]
        widths = [display_width(h) for h in heads]
        for row in cells:
            for i, v in enumerate(row):
                widths[i] = max(widths[i], display_width(v))

        def rule(left, mid, right):
            return left + mid.join("─" * (w + 2) for w in widths) + right

        def render_row(values, aligns):
            return "│" + "│".join(" " + _pad(v, widths[i], aligns[i]) + " "
                                  for i, v in enumerate(values)) + "│"

        # cli-table3 draws a rule between every pair of rows, not only under the heading.
        lines = [rule("┌", "┬", "┐"), render_row(heads, ["left"] * len(heads))]
        for row in cells:
            lines.append(rule("├", "┼", "┤"))
            lines.append(render_row(row, align))
        lines.append(rule("└", "┴", "┘"))
        return "\n".join(lines)

    def render_vertical(self, pairs: list[tuple[str, object]], pad: str = "") -> str:
        """Vertical layout: pad + '<Label>:'.padEnd(maxLabel+1) + '  ' + value, one line a row."""
        if not pairs:
            return ""
        width = max(display_width(label) for label, _ in pairs) + 1
        return "\n".join(pad + _pad(f"{label}:", width) + "  " + ("" if v is None else str(v))
                         for label, v in pairs)

    def table(self, headers: list[str], rows: list[list], align: list[str] | None = None) -> None:
        """A box table on stdout; a vertical layout per row when the box is wider than the terminal."""
        if not rows:
            return
        box = self.render_box(headers, rows, align)
        if display_width(box.split("\n", 1)[0]) <= self.columns():
            self.line(box)
            return
        groups = [self.render_vertical(list(zip(headers, row))) for row in rows]
        self.line("\n\n".join(groups))

    def vertical(self, pairs: list[tuple[str, object]], pad: str = "") -> None:
        text = self.render_vertical(pairs, pad)
        if text:
            self.line(text)

    # prompts -------------------------------------------------------------------------------------
    def confirm(self, message: str) -> bool:
        """tui.confirm(msg, false): prompt on stdout; off a terminal answer the default, "no"."""
        self.stdout.write(f"{message} {self.muted('[y/N]')} ")
        self.stdout.flush()
        if self.stdin is None or not _isatty(self.stdin):
            self.stdout.write("\n")
            self.stdout.flush()
            return False
        answer = self.stdin.readline()
        if not answer:
            self.stdout.write("\n")
            return False
        return answer.strip().lower().startswith("y")

    # manual pages --------------------------------------------------------------------------------
    def manual(self, page: str, env) -> tuple[bool, str]:
        """Show man page ``page`` (section 1) with man(1), through its pager on a terminal.

        -> (True, "") once shown, or (False, why) when man is not on ``env``'s PATH or fails (no
        such page, a pager that fails): the caller then shows the --help text instead.
        """
        import shutil
        import subprocess

        man = shutil.which("man", path=env.get("PATH", os.defpath))
        if man is None:
            return False, "man is not installed (apt-get install man-db)"
        self.flush()
        out_fd = _fileno(self.stdout)
        try:
            # man's stderr is kept: on failure its message becomes ours, one line.
            r = subprocess.run([man, "1", page], env=dict(env), stderr=subprocess.PIPE,
                               stdout=subprocess.PIPE if out_fd is None else out_fd)
        except OSError as exc:
            return False, exc.strerror or str(exc)
        problem = r.stderr.decode("utf-8", "replace").strip()
        if r.returncode != 0:
            import re
            why = (problem.splitlines() or [f"exit status {r.returncode}"])[-1]
            # "man: command exited with status 1: <the whole pipeline>": the pipeline says nothing.
            why = re.sub(r"^\S*man: ", "", why)
            return False, re.sub(r"(command exited with status \d+): .*", r"\1", why)
        if out_fd is None:
            self.write(r.stdout.decode("utf-8", "replace"))
        if problem:
            self.err_line(problem)
        return True, ""


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def file_tree(files: list[tuple[str, int | None]], indent: str = "  ", dir_suffix: str = "/") -> list[str]:
    """Lines of a file tree (├── / └──), directories first, then alphabetical; files with sizes.
    ``dir_suffix`` follows directory names (snapshot build's tree shows none)."""
    root: dict = {}
    for path, size in files:
        parts = [p for p in path.split("/") if p]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part + "/", {})
        if parts:
            node[parts[-1]] = size

    lines: list[str] = []

    def walk(node: dict, prefix: str) -> None:
        keys = sorted(node, key=lambda k: (not k.endswith("/"), k.rstrip("/").lower()))
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            value = node[key]
            branch = "└── " if last else "├── "
            if isinstance(value, dict):
                lines.append(f"{prefix}{branch}{key.rstrip('/')}{dir_suffix}")
                walk(value, prefix + ("    " if last else "│   "))
            else:
                size = "" if value is None else f" ({format_bytes(value)})"
                lines.append(f"{prefix}{branch}{key}{size}")

    walk(root, indent)
    return lines
