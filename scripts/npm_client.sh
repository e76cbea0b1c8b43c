#!/usr/bin/env bash
# Install clients/typescript's pinned packages (npm ci) unless node_modules already
# matches package-lock.json; npm's own cache (~/.npm) keeps a reinstall local.
set -euo pipefail
cd "$(dirname "$0")/../clients/typescript"
stamp=node_modules/.lock-$(cksum < package-lock.json | cut -d' ' -f1)
if [[ ! -e "$stamp" ]]; then
  npm ci --no-audit --no-fund --loglevel=error >&2
  touch "$stamp"
fi
