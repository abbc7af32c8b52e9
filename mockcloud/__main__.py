"""mockcloud's command line: ``serve`` the API, manage ``keys``.

    mockcloud serve [--host 127.0.0.1] [--port 8080] [--state-dir D] [--engine-state E] [--access-log]
    mockcloud keys create --org NAME [--state-dir D] [--json]
    mockcloud keys list [--state-dir D] [--json]

The state directory defaults to $MOCKCLOUD_HOME, else /var/lib/mockcloud; the engine's state
lives in <state-dir>/engine unless --engine-state is given. With --port 0 a free port is chosen
and the server's URL is printed on one line on stdout.
"""
from __future__ import annotations

import argparse
import json
import sys

from localsb.api.errors import LocalsbError

from .store import Store, default_state_dir


# The end of every --help: the man page (scripts/gen-man writes it from this parser).
SEE_PAGE = "see mockcloud(1)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mockcloud", description="The hosted Agentuity sandbox API, locally.",
                                epilog=SEE_PAGE)
    sub = p.add_subparsers(dest="command", required=True)

    def state(sp):
        sp.add_argument("--state-dir", default=None, help="mockcloud state directory "
                        "(default $MOCKCLOUD_HOME or /var/lib/mockcloud)")

    s = sub.add_parser("serve", help="serve the API", epilog=SEE_PAGE)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed on stdout)")
    state(s)
    s.add_argument("--engine-state", default=None, help="engine state directory (default <state-dir>/engine)")
    s.add_argument("--access-log", action="store_true", help="log every request on stderr")

    k = sub.add_parser("keys", help="API keys", epilog=SEE_PAGE)
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", help="make an API key for an organization (created if needed)",
                         epilog=SEE_PAGE)
    kc.add_argument("--org", required=True, help="organization name")
    state(kc)
    kc.add_argument("--json", action="store_true", help="print {id, key, orgId, orgName}")
    kl = ksub.add_parser("list", help="list API keys (ids and orgs; keys are not stored in clear)",
                         epilog=SEE_PAGE)
    state(kl)
    kl.add_argument("--json", action="store_true")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    state_dir = args.state_dir or default_state_dir()
    try:
        if args.command == "serve":
            from .app import serve
            serve(state_dir, args.host, args.port, engine_state=args.engine_state, access_log=args.access_log)
            return 0
        store = Store(state_dir)
        if args.keys_command == "create":
            made = store.key_create(args.org)
            print(json.dumps(made) if args.json else made["key"])
            return 0
        keys = store.key_list()
        if args.json:
            print(json.dumps(keys, indent=2))
        else:
            for k in keys:
                print(f"{k['id']}  {k['orgId']}  {k['orgName']}  {k['createdAt']}")
        return 0
    except LocalsbError as e:
        print(f"mockcloud: {e}", file=sys.stderr)
        return 2 if e.code == "INVALID_ARGUMENT" else 1


if __name__ == "__main__":
    sys.exit(main())
