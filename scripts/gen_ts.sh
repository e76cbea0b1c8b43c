#!/usr/bin/env bash
# Generate the TypeScript/JavaScript stubs of the API into clients/typescript/gen with buf
# and protoc-gen-es (pinned in clients/typescript/package-lock.json).
#   usage: scripts/gen_ts.sh [OUT_DIR]   (default: clients/typescript/gen, replaced whole)
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$(bash scripts/install_tools.sh buf | tr '\n' ':')$PATH"
out=${1:-clients/typescript/gen}
bash scripts/npm_client.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
buf generate --template clients/typescript/buf.gen.yaml -o "$tmp"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$tmp/clients/typescript/gen" "$out"
