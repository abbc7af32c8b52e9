"""`localsb help [command...]`: open the man page that documents a command (its --help without man)."""
from __future__ import annotations

from .. import tree
from ..tree import UsageError, arg, command


def register(sub):
    p = command(sub, "help", help="Open the manual page of a command", handler=help_, dry_run=True,
                description="Open the manual page that documents a command, with man(1); print the "
                            "command's --help instead when man is missing or cannot show the page",
                examples=[("localsb help", "localsb(1): the command tree"),
                          ("localsb help sandbox snapshot", "localsb-snapshot(1)"),
                          ("localsb help sb exec", "localsb-sandbox(1), which documents exec")])
    arg(p, "words", metavar="command", nargs="*",
        help="The command, as typed after 'localsb' (aliases work); none: localsb itself")


def help_(ctx):
    words = ctx.args.words
    parser = ctx.args._root      # the command tree this command line was parsed with (main.build_parser)
    for i, word in enumerate(words):
        child = tree.subcommand(parser, word)
        if child is None:
            known = " ".join(["localsb", *words[:i]])
            raise UsageError(f"unknown command '{' '.join(['localsb', *words[:i + 1]])}' "
                             f"('{known} --help' lists the commands)")
        parser = child
    page = tree.man_page(parser)
    shown, why = ctx.out.manual(page, ctx.env)
    if not shown:
        ctx.out.warning(f"man {page}: {why}; showing '{' '.join([parser.prog, '--help'])}' instead")
        ctx.out.write(parser.format_help())
    return 0
