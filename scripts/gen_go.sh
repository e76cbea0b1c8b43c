#!/usr/bin/env bash
# Generate the Go stubs of the API into clients/go/gen with buf (buf.gen.yaml), using
# protoc-gen-go and protoc-gen-go-grpc built by scripts/install_tools.sh.
#   usage: scripts/gen_go.sh [OUT_DIR]   (default: clients/go/gen, replaced whole)
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$(bash scripts/install_tools.sh buf protoc-gen-go protoc-gen-go-grpc | tr '\n' ':')$PATH"
out=${1:-clients/go/gen}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
buf generate --template buf.gen.yaml -o "$tmp"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$tmp/clients/go/gen" "$out"
