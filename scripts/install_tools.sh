#!/usr/bin/env bash
# Installs the Go-built tools that the deploy checks and the overload test use (helm, buf,
# protoc-gen-go, protoc-gen-go-grpc, ghz) with `go install`, each into its own cache
# directory keyed by version, so a second run costs nothing. Prints the bin directories to
# put on PATH, one per line.
#   usage: scripts/install_tools.sh [helm] [buf] [protoc-gen-go] [protoc-gen-go-grpc] [ghz]
# (no names: all five).
set -euo pipefail

HELM_VERSION=v3.22.0
BUF_VERSION=v1.75.0
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
# gRPC load generator of tests/faults/test_overload.py and bench/overload.py.
GHZ_VERSION=v0.121.0
TOOLS_DIR="${LOOPWISE_TOOLS_DIR:-$HOME/.cache/loopwise/tools}"

install_one() {  # name version module-path binary
  local name=$1 version=$2 module=$3 binary=$4
  local dir="$TOOLS_DIR/$name-$version"
  if [[ ! -x "$dir/bin/$binary" ]]; then
    echo "installing $name $version into $dir" >&2
    mkdir -p "$dir/bin"
    GOBIN="$dir/bin" GOFLAGS=-mod=mod CGO_ENABLED=0 go install "$module@$version" >&2
  fi
  echo "$dir/bin"
}

(( $# )) || set -- helm buf protoc-gen-go protoc-gen-go-grpc ghz
for tool in "$@"; do
  case $tool in
    helm) install_one helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm helm ;;
    buf) install_one buf "$BUF_VERSION" github.com/bufbuild/buf/cmd/buf buf ;;
    protoc-gen-go) install_one protoc-gen-go "$PROTOC_GEN_GO_VERSION" \
      google.golang.org/protobuf/cmd/protoc-gen-go protoc-gen-go ;;
    protoc-gen-go-grpc) install_one protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION" \
      google.golang.org/grpc/cmd/protoc-gen-go-grpc protoc-gen-go-grpc ;;
    ghz) install_one ghz "$GHZ_VERSION" github.com/bojand/ghz/cmd/ghz ghz ;;
    *) echo "unknown tool: $tool" >&2; exit 2 ;;
  esac
done
