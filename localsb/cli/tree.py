"""Building blocks of the argparse tree: the parser class, global options, commands and groups.

Command modules (localsb/cli/commands/*.py) call ``group()`` and ``command()`` to register their
subparsers, tox-style. Nothing here imports more than argparse, so ``localsb --help`` stays fast.
"""
from __future__ import annotations

import argparse
import re
import sys

# argparse looks every help and error string up in gettext's catalogues: a dozen stat(2) calls per
# string, ~4 ms of each command line. localsb speaks English only (as the official CLI does), so
# its argparse does no lookup.
argparse._ = str

# Streams argparse prints help and usage to; main() points them at its injected streams.
STREAMS = {"stdout": None, "stderr": None}


class ParserExit(Exception):
    """argparse wanted to exit (after --help or --version): carry the status back to main()."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class UsageError(Exception):
    """A command line argparse could not parse; main() prints it as one line and exits 2."""

    def __init__(self, message: str, parser=None):
        super().__init__(message)
        self.message = message
        self.parser = parser


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=32, width=100)


NEGATIVE_VALUE_RE = re.compile(r"^-\.?\d")


class Parser(argparse.ArgumentParser):
    """ArgumentParser that raises instead of exiting and prints to the injected streams."""

    # A group's subcommands are added on first use (parse or help), so a command line builds only
    # the part of the tree it walks: `localsb --help` need not build 60 parsers.
    _populate = None

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)
        # A word that starts with '-' and a digit is a value, never an option: `--memory -5Mi`
        # then reaches the option's check ("must be positive") instead of argparse's misleading
        # "expected one argument" (argparse only knows bare numbers like -5 or -.5).
        self._negative_number_matcher = NEGATIVE_VALUE_RE

    def ensure_built(self) -> "Parser":
        if self._populate is not None:
            populate, self._populate = self._populate, None
            populate()
        return self

    def parse_known_args(self, args=None, namespace=None):
        self.ensure_built()
        return super().parse_known_args(args, namespace)

    def format_help(self):
        """argparse's help, then the man page that documents the command (``localsb help``
        opens it)."""
        self.ensure_built()
        return super().format_help() + f"\nsee {man_page(self)}(1)\n"

    def format_usage(self):
        self.ensure_built()
        return super().format_usage()

    def error(self, message):
        raise UsageError(message, self)

    def exit(self, status=0, message=None):
        if message:
            self._print_message(message, STREAMS["stderr"] or sys.stderr)
        raise ParserExit(status)

    def _print_message(self, message, file=None):
        if not message:
            return
        if file is None or file is sys.stdout:
            file = STREAMS["stdout"] or sys.stdout
        elif file is sys.stderr:
            file = STREAMS["stderr"] or sys.stderr
        file.write(message)
        file.flush()


# Which man page documents a command: scripts/gen-man writes the pages by the same rule (the
# sandbox commands in localsb-sandbox(1), one page per group and per command outside the sandbox
# group, these sandbox commands on pages of their own, and these top-level ones in localsb(1)).
OWN_PAGE_LEAVES = ("env", "events", "stats")
TOP_PAGE_COMMANDS = ("help",)


def man_page(parser) -> str:
    """The name of the man page (section 1) that documents ``parser``'s command."""
    words = parser.prog.split()[1:]
    if words[:1] == ["cloud"]:
        words = words[1:]
    if not words or words[0] in TOP_PAGE_COMMANDS:
        return "localsb"
    if words[0] == "sandbox" and len(words) > 1:
        if len(words) == 2 and parser._subparsers is None and words[1] not in OWN_PAGE_LEAVES:
            return "localsb-sandbox"
        return f"localsb-{words[1]}"
    return f"localsb-{words[0]}"


def subcommand(parser, name: str):
    """The parser of command ``name`` under ``parser`` (an alias works too), or None."""
    if isinstance(parser, Parser):
        parser.ensure_built()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action._name_parser_map.get(name)
    return None


def _help(text: str, default=None) -> str:
    """Help text with its default spelled out (man pages are generated from these strings)."""
    text = text.replace("%", "%%")
    if default not in (None, False, [], ()):
        text += f" (default: {str(default).replace('%', '%%')})"
    return text


def opt(parser, *flags, help: str, default=None, show_default=None, **kwargs):
    """Add an option whose help names its default; ``show_default`` overrides what is shown."""
    if kwargs.get("action") in ("store_true", "store_false"):
        kwargs.setdefault("default", False if kwargs["action"] == "store_true" else True)
    elif kwargs.get("action") == "append":
        kwargs.setdefault("default", None)
    else:
        kwargs["default"] = default
    shown = show_default if show_default is not None else default
    return parser.add_argument(*flags, help=_help(help, shown), **kwargs)


def arg(parser, name, *, help: str, **kwargs):
    return parser.add_argument(name, help=_help(help), **kwargs)


def _global_options() -> Parser:
    """Options accepted anywhere: before or after the subcommand, as the official CLI's globals.

    Defaults are SUPPRESS so that a subcommand that does not repeat an option keeps the value
    given before it; main() fills the real defaults in.
    """
    p = Parser(add_help=False)
    g = p.add_argument_group("global options")
    s = argparse.SUPPRESS
    g.add_argument("--json", action="store_true", default=s,
                   help="Print machine-readable JSON on stdout; errors become JSON on stderr")
    g.add_argument("--org-id", metavar="ID", default=s,
                   help="Use a specific organization (default: $AGENTUITY_CLOUD_ORG_ID)")
    g.add_argument("--quiet", action="store_true", default=s,
                   help="Suppress non-essential output; run and exec: suppress the command's "
                        "stdout/stderr stream")
    g.add_argument("--backend", choices=("local", "cloud"), default=s,
                   help="Where sandboxes live: the local engine or a hosted API "
                        "(default: $LOCALSB_BACKEND, else local)")
    g.add_argument("--debug", action="store_true", default=s,
                   help="Show the traceback of errors")
    g.add_argument("--color", choices=("auto", "always", "never"), default=s,
                   help="Colour the output (default: auto: only on a terminal, not with NO_COLOR)")
    g.add_argument("--dry-run", action="store_true", default=s,
                   help="Validate and show what would be done without doing it (run, create, "
                        "snapshot build)")
    return p


GLOBAL_DEFAULTS = {"json": False, "org_id": None, "quiet": False, "backend": None, "debug": False,
                   "color": "auto", "dry_run": False}
GLOBALS = _global_options()


def _epilog(examples) -> str | None:
    if not examples:
        return None
    lines = ["examples:"]
    for ex in examples:
        if isinstance(ex, tuple):
            cmdline, note = ex
            lines.append(f"  # {note}")
            lines.append(f"  {cmdline}")
        else:
            lines.append(f"  {ex}")
    return "\n".join(lines)


def command(sub, name: str, *, help: str, handler, aliases=(), examples=(), description=None,
            takes_command: bool = False, dry_run: bool = False, usage=None):
    """Register a leaf command: its handler gets a Context and returns an exit code or None.

    ``takes_command``: everything after the first ``--`` is the command (run, exec, job create).
    ``dry_run``: the command honours --dry-run (or changes nothing, so it is trivially honoured).
    """
    p = sub.add_parser(name, aliases=list(aliases), help=help, description=description or help,
                       epilog=_epilog(examples), parents=[GLOBALS], formatter_class=Formatter,
                       usage=usage)
    p.set_defaults(_handler=handler, _takes_command=takes_command, _dry_run_ok=dry_run,
                   _parser=p, _command=p.prog)
    return p


def _group_help(ctx):
    ctx.args._parser.print_help()
    return 0


def group(sub, name: str, *, help: str, aliases=(), examples=(), description=None, populate=None):
    """Register a command group; without a subcommand it prints its help (with examples).

    ``populate(children)`` adds the group's commands; it runs when the group is first used.
    """
    p = sub.add_parser(name, aliases=list(aliases), help=help, description=description or help,
                       epilog=_epilog(examples), parents=[GLOBALS], formatter_class=Formatter)
    p.set_defaults(_handler=_group_help, _takes_command=False, _dry_run_ok=True, _parser=p,
                   _command=p.prog)
    children = p.add_subparsers(title="commands", metavar="<command>", parser_class=Parser)
    if populate is not None:
        p._populate = lambda: populate(children)
    return p, children


def build_all(parser) -> None:
    """Build every lazily populated group below ``parser`` (man pages, tests of the whole tree)."""
    seen = set()

    def walk(p):
        if id(p) in seen:
            return
        seen.add(id(p))
        if isinstance(p, Parser):
            p.ensure_built()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action._name_parser_map.values():
                    walk(child)

    walk(parser)


def share(sub, name: str, parser, *, help: str, aliases=()):
    """Make an existing parser reachable under another parent (``sandbox`` beside ``cloud sandbox``).

    argparse has no public way to do this; a placeholder is registered for the help listing and
    the name map then points at the real parser, so the subtree is built once.
    """
    sub.add_parser(name, aliases=list(aliases), help=help, add_help=False)
    for key in (name, *aliases):
        sub._name_parser_map[key] = parser


def int_range(lo: int, hi: int | None = None, what: str = "value"):
    def parse(text):
        try:
            value = int(float(text)) if "." in str(text) else int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"invalid {what} '{text}': expected a number") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"invalid {what} {value}: must be {bound}")
        return value
    parse.__name__ = what
    return parse
