"""localsb's entry point: the parser, the dispatch to handlers, and errors turned into exit codes.

``main(argv, env, stdin, stdout, stderr)`` takes its whole environment as arguments (httpie-style)
so tests run it in-process. Only this module maps errors to exit codes; only output.py writes.
"""
from __future__ import annotations

import os
import sys
import time

from . import tree
from .tree import ParserExit, UsageError

# Exit codes of the official CLI (reference/hosted-api.md §4.1).
EXIT_OK = 0
EXIT_GENERAL = 1
EXIT_VALIDATION = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_PERMISSION = 5
EXIT_NETWORK = 6
EXIT_FILE = 7
EXIT_CANCELLED = 8
EXIT_BUILD_FAILED = 9


def build_parser(lazy: bool = False) -> tree.Parser:
    """The full command tree (what argparse-manpage renders the man pages from).

    ``lazy``: leave command groups unbuilt until a command line walks into them (main() does).
    """
    from localsb import __version__
    from .commands import doctor, sandbox, ssh, ssh_key
    from .commands import help as help_command

    top = tree.Parser(prog="localsb", parents=[tree.GLOBALS],
                      description="The Agentuity cloud sandbox command set on this machine.\n"
                                  "'localsb cloud sandbox <command>' is 'agentuity cloud sandbox <command>';\n"
                                  "'localsb sandbox' and 'localsb sb' are its short forms.",
                      epilog=tree._epilog([
                          "localsb cloud sandbox run -- echo 'Hello, World!'",
                          "localsb sb create --memory 1Gi --network",
                          "localsb sb list",
                          "localsb doctor",
                      ]))
    top.add_argument("-v", "--version", action="version", version=f"localsb {__version__}",
                     help="Print the version and exit")
    top.set_defaults(_handler=tree._group_help, _takes_command=False, _dry_run_ok=True,
                     _parser=top, _command="localsb", _root=top)   # _root: `help` walks the tree from it
    sub = top.add_subparsers(title="commands", metavar="<command>", parser_class=tree.Parser)

    cloud, cloud_sub = tree.group(sub, "cloud", help="Cloud services: sandboxes and SSH",
                                  examples=["localsb cloud sandbox list",
                                            "localsb cloud ssh sbx_abc123xyz"])
    sb = sandbox.register(cloud_sub)
    ssh.register(cloud_sub)
    tree.share(sub, "sandbox", sb, aliases=["sb"], help="Short form of 'cloud sandbox'")
    doctor.register(sub)
    ssh_key.register(sub)
    help_command.register(sub)
    if not lazy:
        tree.build_all(top)
    return top


def _split_command(argv: list[str]):
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:], True
    return argv, [], False


def parse_args(parser, argv: list[str]):
    """Parse ``argv``; for run, exec and job create everything after the first ``--`` is the
    command (argparse.REMAINDER would swallow the command's own options)."""
    head, tail, had_sep = _split_command(argv)
    try:
        args, extra = parser.parse_known_args(head)
    except UsageError:
        if not had_sep:
            raise
        args = None
    if had_sep and (args is None or not args._takes_command):
        # Not a command-taking subcommand: '--' keeps its usual meaning (end of options), as in
        # `fs rm sbx_1 -- -file-with-a-dash`.
        args, extra = parser.parse_known_args(argv)
    for key, value in tree.GLOBAL_DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    if getattr(args, "_takes_command", False):
        from localsb.api.errors import ValidationError
        if extra:
            raise ValidationError(f"Unexpected argument '{extra[0]}': give the command after '--', "
                                  f"as in: {args._command} [options] -- <command> [args...]")
        args.command = tail
        if not tail:
            raise ValidationError(f"No command given: use {args._command} [options] -- <command> [args...]")
    elif extra:
        raise UsageError(f"unrecognized arguments: {' '.join(extra)}", args._parser)
    return args


class Context:
    """What a handler gets: parsed args, the environment, the output, and the backend (lazily)."""

    def __init__(self, args, env, out, backend=None):
        self.args = args
        self.env = env
        self.out = out
        self._backend = backend
        self._owns_backend = backend is None

    @property
    def backend(self):
        if self._backend is None:
            from localsb.backends import get_backend
            from . import config
            self._backend = get_backend(config.backend_name(self.args.backend, self.env), self.env,
                                        org_id=self.org_id)
        return self._backend

    @property
    def org_id(self) -> str | None:
        from . import config
        return config.org_id(self.args.org_id, self.env)

    def project_id(self, value: str | None) -> str | None:
        from . import config
        return config.project_id(value, self.env)

    def timed(self, fn, *args, **kwargs):
        """Call a backend method; return (result, elapsed milliseconds) as the CLI reports them."""
        t0 = time.monotonic()
        result = fn(*args, **kwargs)
        return result, int(round((time.monotonic() - t0) * 1000))

    def close(self) -> None:
        if self._backend is not None and self._owns_backend:
            self._backend.close()


def exit_code_for(exc: BaseException) -> int:
    from localsb.api import errors as E
    from .errors import LocalFileError

    if isinstance(exc, (E.ValidationError, UsageError)):
        return EXIT_VALIDATION
    if isinstance(exc, E.Unauthorized):
        return EXIT_AUTH
    if isinstance(exc, E.NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, E.Forbidden):
        return EXIT_PERMISSION
    if isinstance(exc, (E.NetworkError, E.APIError)):
        return EXIT_NETWORK
    if isinstance(exc, (LocalFileError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                        PermissionError)):
        return EXIT_FILE
    if isinstance(exc, (E.Cancelled, KeyboardInterrupt)):
        return EXIT_CANCELLED
    if isinstance(exc, E.BuildFailed):
        return EXIT_BUILD_FAILED
    return EXIT_GENERAL


def _describe(exc: BaseException, ctx: Context | None) -> tuple[str, str, bool]:
    """-> (code, one-line message, expected?) for an error that reached main()."""
    from localsb.api.errors import LocalsbError

    if isinstance(exc, UsageError):
        return "INVALID_ARGUMENT", exc.message, True
    if isinstance(exc, LocalsbError):
        return exc.code, exc.message, True
    if isinstance(exc, KeyboardInterrupt):
        return "CANCELLED", "Cancelled", True
    if isinstance(exc, NotImplementedError):
        name = getattr(ctx._backend, "name", "selected") if ctx else "selected"
        command = getattr(ctx.args, "_command", "this command") if ctx else "this command"
        return "NOT_SUPPORTED", f"'{command}' is not supported by the {name} backend", True
    if isinstance(exc, OSError) and exc.filename is not None:
        return "FILE_ERROR", f"{exc.strerror or exc}: {exc.filename}", True
    text = str(exc)
    return "ERROR", f"{type(exc).__name__}: {text}" if text else type(exc).__name__, False


def main(argv=None, env=None, stdin=None, stdout=None, stderr=None, *, backend=None) -> int:
    """Run one localsb command line; return the process exit code.

    ``backend`` injects a Backend instance (tests); otherwise one is made from --backend/env.
    """
    from .output import Output

    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    tree.STREAMS.update(stdout=stdout, stderr=stderr)

    head = _split_command(argv)[0]
    json_mode, debug = "--json" in head, "--debug" in head
    out = Output(stdout, stderr, stdin, json=json_mode, env=env)
    ctx = None
    try:
        args = parse_args(build_parser(lazy=True), argv)
        json_mode, debug = args.json, args.debug
        out = Output(stdout, stderr, stdin, json=args.json, quiet=args.quiet, color=args.color, env=env)
        ctx = Context(args, env, out, backend)
        if args.dry_run and not args._dry_run_ok:
            from localsb.api.errors import ValidationError
            raise ValidationError(f"--dry-run is not supported by '{args._command}'")
        rc = args._handler(ctx)
        out.flush()
        return EXIT_OK if rc is None else int(rc)
    except ParserExit as exc:
        return exc.status
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); nothing more can be shown.
        return EXIT_GENERAL
    except BaseException as exc:  # noqa: BLE001 - every failure becomes one line and an exit code
        if isinstance(exc, SystemExit):
            raise
        code, message, expected = _describe(exc, ctx)
        rc = exit_code_for(exc)
        out.flush()
        if debug:
            import traceback
            out.err_line("".join(traceback.format_exception(exc)).rstrip("\n"))
        if json_mode:
            out.json_error(code, message, rc)
        elif expected:
            out.error(message)
        else:
            out.error(f"{message} (an internal error: run with --debug for the traceback)")
        return rc
    finally:
        if ctx is not None:
            try:
                ctx.close()
            except Exception:  # noqa: BLE001 - closing must not hide the command's result
                pass
        tree.STREAMS.update(stdout=None, stderr=None)
