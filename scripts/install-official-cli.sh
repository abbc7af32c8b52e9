#!/bin/sh
# Install the official Agentuity CLI (@agentuity/cli@2.0.21), the bun runtime it needs, and the
# TypeScript SDK at the version that CLI depends on (@agentuity/core@2.0.21, run on node by the
# conformance suite's sdk runner) into a private directory with npm, for the tests that run the
# official clients against mockcloud (reference/official-cli-wire.md §1.1). A local (non-global) install never runs the CLI's update
# check. Idempotent: a complete install is left alone. Prints the bin directory on stdout.
#
# usage: scripts/install-official-cli.sh [DIR]      (default /opt/localsb-official-cli)
set -eu

CLI_VERSION="2.0.21"
DIR="${1:-${LOCALSB_OFFICIAL_CLI_DIR:-/opt/localsb-official-cli}}"
BIN="$DIR/node_modules/.bin"

installed_version() {
    # The package's own manifest says what is installed; no network needed.
    node -e "process.stdout.write(require('$DIR/node_modules/@agentuity/$1/package.json').version)" 2>/dev/null || true
}

if [ -x "$BIN/agentuity" ] && [ -x "$BIN/bun" ] && [ "$(installed_version cli)" = "$CLI_VERSION" ] \
        && [ "$(installed_version core)" = "$CLI_VERSION" ]; then
    echo "$BIN"
    exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "install-official-cli: npm not found (apt-get install npm)" >&2; exit 1; }

mkdir -p "$DIR"
if [ ! -f "$DIR/package.json" ]; then
    printf '{\n  "name": "localsb-official-cli",\n  "private": true\n}\n' > "$DIR/package.json"
fi
# npm's own output goes to stderr so that stdout carries only the bin path.
( cd "$DIR" && npm install --no-audit --no-fund --loglevel=error "@agentuity/cli@$CLI_VERSION" \
    "@agentuity/core@$CLI_VERSION" bun ) >&2

if [ ! -x "$BIN/agentuity" ] || [ ! -x "$BIN/bun" ] || [ "$(installed_version core)" != "$CLI_VERSION" ]; then
    echo "install-official-cli: npm finished but $BIN/agentuity, $BIN/bun or @agentuity/core $CLI_VERSION is missing" >&2
    exit 1
fi
echo "$BIN"
