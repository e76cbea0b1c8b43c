#!/usr/bin/env bash
# Render the Helm chart into the plain manifests under deploy/k8s/manifests/ (`make
# manifests`), or with --check compare a fresh rendering with the committed files.
#   loopwise.yaml        default values (Cassandra, TLS and tokens, autoscaling)
#   loopwise-trial.yaml  ci/sqlite.yaml (one replica of each, SQLite, plaintext)
# The `helm test` hook (templates/tests/) is left out: applied with kubectl it would run
# at once, before the services are up; with plain manifests run `python -m loopwise.smoke`
# from a client pod instead. So is the migrations Job (a pre-install/pre-upgrade hook):
# kubectl has no hooks, so the services of the plain manifests migrate when they start
# (or run `loopwise migrate` first and set LOOPWISE_STORE_MIGRATE_ON_START=false).
set -euo pipefail
cd "$(dirname "$0")/.."
KUBE_VERSION=1.33.0
CHART=deploy/k8s/helm/loopwise
OUT=deploy/k8s/manifests
check=0
[[ "${1:-}" == "--check" ]] && check=1
PATH="$(bash scripts/install_tools.sh helm | tr '\n' ':')$PATH"

render() {  # values-file-or-empty output
  local args=(template loopwise "$CHART" --namespace loopwise --kube-version "$KUBE_VERSION"
              --skip-tests --set migrations.job.enabled=false)
  [[ -n "$1" ]] && args+=(-f "$1")
  { echo "# Rendered from $CHART by 'make manifests' (scripts/render_manifests.sh); do not edit."
    helm "${args[@]}"; } > "$2"
}

mkdir -p "$OUT"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
render "" "$tmp/loopwise.yaml"
render "$CHART/ci/sqlite.yaml" "$tmp/loopwise-trial.yaml"
if (( check )); then
  status=0
  for f in loopwise.yaml loopwise-trial.yaml; do
    diff -u "$OUT/$f" "$tmp/$f" || { echo "$OUT/$f is out of date: run make manifests" >&2; status=1; }
  done
  exit $status
fi
cp "$tmp"/*.yaml "$OUT"/
echo "rendered $OUT/loopwise.yaml $OUT/loopwise-trial.yaml"
