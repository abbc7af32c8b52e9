"""mockcloud with one deliberate wire bug, for the suite's self-check: the answer of one route
has one JSON field renamed. A conformance suite that still passes against this server would not
be checking that field.

    python3 -m conformance.mutant_mockcloud --route 'GET /sandbox/{sandboxId}' \
        --rename data.executions data.executionCount  serve --host H --port 0 --state-dir D [--engine-state E]

The mutation is an aiohttp middleware put in front of mockcloud's own, so mockcloud's code is
used unchanged. It prints the URL on one line, like ``mockcloud serve``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from aiohttp import web


def rename(obj, src: str, dst: str) -> bool:
    """Move the value at dotted path ``src`` to ``dst`` (same parent); False if absent."""
    *parents, key = src.split(".")
    node = obj
    for p in parents:
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    if not isinstance(node, dict) or key not in node:
        return False
    node[dst.split(".")[-1]] = node.pop(key)
    return True


def mutation_middleware(route: str, src: str, dst: str):
    method, _, canonical = route.partition(" ")

    @web.middleware
    async def mutate(request: web.Request, handler):
        resp = await handler(request)
        resource = request.match_info.route.resource
        if (request.method != method or resource is None or resource.canonical != canonical
                or not isinstance(resp, web.Response) or resp.content_type != "application/json"):
            return resp
        body = json.loads(resp.body)
        if rename(body, src, dst):
            return web.json_response(body, status=resp.status)
        return resp

    return mutate


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="mutant_mockcloud")
    p.add_argument("--route", required=True, help="METHOD and route pattern, as mockcloud.routes names it")
    p.add_argument("--rename", nargs=2, required=True, metavar=("FROM", "TO"), help="dotted JSON paths")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--state-dir", required=True)
    s.add_argument("--engine-state", default=None)
    args = p.parse_args(argv)

    from mockcloud.app import make_app, serve_app

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="mutant-mockcloud: %(levelname)s %(message)s")
    app = make_app(args.state_dir, engine_state=args.engine_state)
    # Outermost, so that it sees (and changes) what mockcloud's own middlewares produced.
    app.middlewares.insert(0, mutation_middleware(args.route, *args.rename))

    asyncio.run(serve_app(app, args.host, args.port))
    sys.stdout.flush()
    # As mockcloud serve: parked long-poll threads must not hold the exit.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
