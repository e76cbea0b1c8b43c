#!/usr/bin/env bash
# Write the committed v1 API baseline that `buf breaking` compares with
# (protos/baseline/loopwise-v1.binpb, a buf image of the committed protos/ at a git
# revision, default HEAD). Run it only when a release deliberately fixes the API:
# comparing the working tree with itself proves nothing.
#   usage: scripts/api_baseline.sh [REVISION]
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$(bash scripts/install_tools.sh buf | tr '\n' ':')$PATH"
revision=${1:-HEAD}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive "$revision" protos buf.yaml | tar -x -C "$tmp"
mkdir -p protos/baseline
(cd "$tmp" && buf build -o image.binpb)
cp "$tmp/image.binpb" protos/baseline/loopwise-v1.binpb
echo "wrote protos/baseline/loopwise-v1.binpb from $revision ($(git rev-parse --short "$revision"))"
