#!/usr/bin/env bash
# Builds the test control plane that envtest runs (kube-apiserver,
# kube-controller-manager, kubectl and etcd) from the Go module proxy, since
# setup-envtest's download is not reachable. Prints the directory to use as
# KUBEBUILDER_ASSETS.
#
# The binaries are built once per machine into a cache outside the clone
# ($GATEHOUSE_CACHE, default ~/.cache/gatehouse) and linked into
# bin/k8s/<version>, so a fresh clone on the same machine pays nothing. The
# build holds a lock (flock) and moves the finished directory into place in
# one rename, so no one ever sees a half-built set. A cold build takes about
# ten minutes on two cores.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.37.0}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
root=$(cd "$(dirname "$0")/.." && pwd)
cache_root=${GATEHOUSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse}
cache=$cache_root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION
link=$root/bin/k8s/$K8S_VERSION

log() { printf 'envtest-binaries: %s\n' "$*" >&2; }

complete() {
  for b in kube-apiserver kube-controller-manager kubectl etcd; do
    [[ -x $1/$b ]] || return 1
  done
}

mkdir -p "$cache_root"
exec 9>"$cache.lock"
flock 9

if ! complete "$cache"; then
  work=$(mktemp -d "$cache_root/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/out" "$work/k8s" "$work/etcd"

  log "building kube-apiserver, kube-controller-manager and kubectl v$K8S_VERSION (about 10 minutes cold)"
  k8s_mod=$(cd "$work/k8s" && printf 'module envtestbuild\n\ngo 1.26\n' >go.mod &&
    GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  minor=${K8S_VERSION#*.}; minor=${minor%%.*}
  {
    printf 'module envtestbuild\n\ngo 1.26\n\nrequire k8s.io/kubernetes v%s\n\n' "$K8S_VERSION"
    # Every staging module the kubernetes module replaces locally comes
    # from its published release instead.
    sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#replace \1 => \1 v0.'"$minor"'.'"${K8S_VERSION##*.}"'#p' "$k8s_mod"
  } >"$work/k8s/go.mod"
  log "$(grep -c '^replace' "$work/k8s/go.mod") staging modules replaced by their v0.$minor releases"
  ver="-X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ver="$ver -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  (cd "$work/k8s" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ver" -o "$work/out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl)

  log "building etcd v$ETCD_VERSION"
  printf 'module envtestbuild\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' "$ETCD_VERSION" >"$work/etcd/go.mod"
  (cd "$work/etcd" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/out/etcd" go.etcd.io/etcd/server/v3)

  complete "$work/out"
  rm -rf "$cache"
  mv "$work/out" "$cache"
  log "built into $cache"
fi

mkdir -p "$(dirname "$link")"
ln -sfn "$cache" "$link"
echo "$link"
