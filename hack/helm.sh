#!/usr/bin/env bash
# Builds helm (the chart's tests and `make helm` use it) from the Go module
# proxy, since get.helm.sh is not reachable. Prints the binary's path.
#
# Like envtest-binaries.sh, the binary is built once per machine into a cache
# outside the clone ($GATEHOUSE_CACHE, default ~/.cache/gatehouse) and linked
# into bin/tools/helm-<version>, so a fresh clone on the same machine pays
# nothing. The build holds a lock (flock) and moves the finished directory
# into place in one rename, so no one ever sees a half-built binary. A cold
# build takes a few minutes on two cores.
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v4.3.1}
root=$(cd "$(dirname "$0")/.." && pwd)
cache_root=${GATEHOUSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse}
cache=$cache_root/helm-$HELM_VERSION
link=$root/bin/tools/helm-$HELM_VERSION

log() { printf 'helm: %s\n' "$*" >&2; }

mkdir -p "$cache_root"
exec 9>"$cache.lock"
flock 9

if [[ ! -x $cache/helm ]]; then
  work=$(mktemp -d "$cache_root/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/out"
  log "building helm $HELM_VERSION (a few minutes cold)"
  # helm stamps its version at link time; without it `helm version` says
  # only the minor version.
  (cd "$work" && GOBIN=$work/out GOFLAGS=-mod=mod go install \
    -ldflags "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v4/cmd/helm@$HELM_VERSION")
  [[ -x $work/out/helm ]]
  rm -rf "$cache"
  mv "$work/out" "$cache"
  log "built into $cache"
fi

mkdir -p "$(dirname "$link")"
ln -sfn "$cache/helm" "$link"
echo "$link"
