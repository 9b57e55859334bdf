#!/usr/bin/env bash
# Start a real, local Kubernetes control plane (etcd + kube-apiserver [+ kube-controller-manager])
# on 127.0.0.1 with no Docker, no kubelet and no internet except Debian's apt registry.
#
#   etcd            : Debian bookworm package etcd-server 3.4.23
#   kube-apiserver  : built from Debian bookworm's *source* package "kubernetes"
#                     (1.20.5+really1.20.2, the full upstream v1.20.2 tree incl. vendor/)
#                     with Debian's golang-go 1.19, GOPATH mode, CGO off.
#   kube-controller-manager : same source, optional (START_KCM=1).
#
# Vendored from the team's shared tools (../shared/tools/local-k8s.sh); driven by
# `cargo xtask infra up|down` (xtask/src/infra/kubernetes.rs), which sets K8S_DIR=target/infra/kubernetes.
#
# A node (kubelet, kube-proxy, kube-scheduler, containerd) is run by xtask/src/infra/node.rs; this
# script builds its binaries (BUILD_NODE=1) and, when ADVERTISE_ADDRESS is set, prepares the
# control plane for it: the API server listens on every address and advertises ADVERTISE_ADDRESS
# (an address of the node that pods can reach) as the `kubernetes` Service's endpoint, serves a
# certificate valid for it, authorizes kubelets (Node,RBAC) and reaches them by InternalIP with a
# client certificate; the PKI holds client certificates and kubeconfigs for the node's parts.
#
# Usage:  local-k8s.sh [start|stop|build]
#   start (default): build binaries if not cached, generate PKI, start etcd + apiserver (+kcm),
#                    wait for /readyz, write $K8S_DIR/kubeconfig.  Prints "export KUBECONFIG=...".
#   stop           : kill the processes started by "start" (by PID file).
#   build          : only install toolchain + build binaries into $K8S_CACHE.
set -euo pipefail

K8S_VERSION=1.20.2
DEB_SRC_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
K8S_CACHE="${K8S_CACHE:-/var/cache/local-k8s/v${K8S_VERSION}}"   # survives between runs on the same machine
K8S_DIR="${K8S_DIR:-/tmp/local-k8s}"                               # per-run state: pki, etcd data, logs, kubeconfig
ETCD_PORT="${ETCD_PORT:-23790}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-23800}"
APISERVER_PORT="${APISERVER_PORT:-16443}"
START_KCM="${START_KCM:-0}"          # 1 = also run kube-controller-manager (GC, Deployments->ReplicaSets, default SA, SA tokens)
BUILD_KCM="${BUILD_KCM:-$START_KCM}"
BUILD_NODE="${BUILD_NODE:-0}"        # 1 = also build kubelet, kube-scheduler, kube-proxy (a node)
SERVICE_CIDR="${SERVICE_CIDR:-10.0.0.0/24}"
ADVERTISE_ADDRESS="${ADVERTISE_ADDRESS:-}"  # empty = 127.0.0.1 only, no `kubernetes` endpoints
NODE_NAME="${NODE_NAME:-local-node}"        # the kubelet's node name (its certificates' names)

log() { echo "[local-k8s $(date +%T)] $*" >&2; }

build() {
  local want=(kube-apiserver)
  [ "$BUILD_KCM" = 1 ] && want+=(kube-controller-manager)
  [ "$BUILD_NODE" = 1 ] && want+=(kube-scheduler kubelet kube-proxy)
  local missing=()
  for b in "${want[@]}"; do [ -x "$K8S_CACHE/bin/$b" ] || missing+=("$b"); done
  if ! command -v etcd >/dev/null || ! command -v go >/dev/null || ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
    log "apt-get install etcd-server golang-go openssl curl"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      etcd-server golang-go openssl curl ca-certificates >/dev/null
  fi
  [ ${#missing[@]} -eq 0 ] && return 0

  local work; work="$(mktemp -d /tmp/local-k8s-build.XXXXXX)"
  log "downloading Debian source package kubernetes=$DEB_SRC_VERSION into $work"
  # private apt config with a deb-src line, so the system's sources are left alone
  mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/sources.d"
  # Reuse the machine's own Debian sources, adding deb-src, in a private apt config.
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed 's/^Types: deb$/Types: deb deb-src/' "$f" > "$work/apt/sources.d/$(basename "$f")"
  done
  [ -f /etc/apt/sources.list ] && sed -n 's/^deb \(.*\)$/deb \1\ndeb-src \1/p' /etc/apt/sources.list > "$work/apt/sources.list"
  touch "$work/apt/sources.list"
  local APTO=(-o APT::Sandbox::User=root -o Dir::Etc::SourceList="$work/apt/sources.list" -o Dir::Etc::SourceParts="$work/apt/sources.d"
              -o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache")
  apt-get "${APTO[@]}" update -qq
  (cd "$work" && apt-get "${APTO[@]}" source --download-only -qq "kubernetes=$DEB_SRC_VERSION" 2>/dev/null)
  tar xzf "$work"/kubernetes_*.orig.tar.gz -C "$work"
  local src="$work/kubernetes-$K8S_VERSION"

  # Fix 1: vendored github.com/modern-go/reflect2 v1.0.1 segfaults under Go >= 1.18 ("fatal error: fault"
  # in mapiterinit on the first CR create). Swap in Debian's reflect2 1.0.2 (the upstream fix).
  (cd "$work" && apt-get "${APTO[@]}" download -qq golang-github-modern-go-reflect2-dev 2>/dev/null && dpkg-deb -x golang-github-modern-go-reflect2-dev_*.deb "$work/r2")
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  cp -a "$work/r2/usr/share/gocode/src/github.com/modern-go/reflect2" "$src/vendor/github.com/modern-go/reflect2"
  rm -f "$src/vendor/github.com/modern-go/reflect2/go.mod"

  # Kubernetes 1.20 builds in GOPATH mode (hack/lib/init.sh sets GO111MODULE=off).
  export GOPATH="$work/gopath" GOCACHE="${GOCACHE:-$K8S_CACHE/gocache}" GO111MODULE=off CGO_ENABLED=0 GOFLAGS=
  mkdir -p "$GOPATH/src/k8s.io"
  ln -sfn "$src" "$GOPATH/src/k8s.io/kubernetes"
  cd "$GOPATH/src/k8s.io/kubernetes"

  # Fix 2: pkg/generated/openapi/zz_generated.openapi.go is not in the tarball (made by `make generated_files`).
  log "generating pkg/generated/openapi with openapi-gen"
  go build -o "$work/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  local dirs files odirs
  dirs=$(find -H . \( -not \( \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \) \) -type f -name '*.go' \
         | sed 's|^./staging/src|vendor|; s|/[^/]*$||; s|^./||' | LC_ALL=C sort -u)
  files=$(for d in $dirs; do ls "$d"/*.go 2>/dev/null; done | xargs grep -l '^// *+k8s:' \
          | grep -v -E '^vendor/k8s.io/(code-generator|sample-apiserver)/' || true)
  odirs=$(grep -l '+k8s:openapi-gen=' $files | xargs -n1 dirname | LC_ALL=C sort -u)
  "$work/openapi-gen" -i "$(echo "$odirs" | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)" \
    -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$work/openapi-violations.report"

  local LD="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LD="$LD -X k8s.io/kubernetes/vendor/$p.gitVersion=v$K8S_VERSION -X k8s.io/kubernetes/vendor/$p.gitMajor=1"
    LD="$LD -X k8s.io/kubernetes/vendor/$p.gitMinor=20 -X k8s.io/kubernetes/vendor/$p.gitTreeState=clean"
  done
  mkdir -p "$K8S_CACHE/bin"
  for b in "${missing[@]}"; do
    log "go build ./cmd/$b (cold, 2 cores: kube-apiserver 5-9 min, then ~1 min each)"
    go build -trimpath -ldflags "$LD" -o "$K8S_CACHE/bin/$b.tmp" "./cmd/$b"
    mv "$K8S_CACHE/bin/$b.tmp" "$K8S_CACHE/bin/$b"
  done
  cd /
  rm -rf "$work"
}

# sign <name> <subject> <extension lines...>: <name>.key + <name>.crt signed by the CA, once.
sign() {
  local name=$1 subject=$2; shift 2
  [ -f "$name.crt" ] && return 0
  openssl req -new -nodes -newkey rsa:2048 -keyout "$name.key" -subj "$subject" -out "$name.csr" 2>/dev/null
  printf '%s\n' "$@" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
}

pki() {
  local d="$K8S_DIR/pki"
  mkdir -p "$d"; cd "$d"
  if [ ! -f ca.crt ]; then
    log "generating PKI in $d"
    openssl genrsa -out ca.key 2048 2>/dev/null
    openssl req -x509 -new -nodes -key ca.key -subj "/CN=local-k8s-ca" -days 3650 -out ca.crt
    # service-account token signing key pair
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  fi
  local server=(extendedKeyUsage=serverAuth keyUsage=critical,digitalSignature,keyEncipherment)
  local client=(extendedKeyUsage=clientAuth keyUsage=critical,digitalSignature,keyEncipherment)
  # kube-apiserver serving cert, re-issued when the addresses it must be valid for change
  local san="subjectAltName=IP:127.0.0.1,IP:10.0.0.1${ADVERTISE_ADDRESS:+,IP:$ADVERTISE_ADDRESS},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  [ "$(head -n1 apiserver.ext 2>/dev/null)" = "$san" ] || rm -f apiserver.crt
  sign apiserver "/CN=kube-apiserver" "$san" "${server[@]}"
  # admin client cert (group system:masters => cluster-admin under RBAC)
  sign admin "/O=system:masters/CN=admin" "${client[@]}"
  # The node's parts, each as the user the bootstrap RBAC policy (or the Node authorizer) expects.
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "${client[@]}"
  sign kube-proxy "/CN=system:kube-proxy" "${client[@]}"
  sign kube-scheduler "/CN=system:kube-scheduler" "${client[@]}"
  local kubelet_san="subjectAltName=DNS:$NODE_NAME${ADVERTISE_ADDRESS:+,IP:$ADVERTISE_ADDRESS}"
  [ "$(head -n1 kubelet.ext 2>/dev/null)" = "$kubelet_san" ] || rm -f kubelet.crt kubelet-client.crt
  sign kubelet "/CN=$NODE_NAME" "$kubelet_san" "${server[@]}"
  sign kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" "${client[@]}"
  cd - >/dev/null
}

# kubeconfig <file> <cert>: a kubeconfig for the client certificate pki/<cert>.crt.
kubeconfig() {
  local d="$K8S_DIR/pki" file=$1 cert=$2
  cat > "$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$d/ca.crt")
users:
- name: $cert
  user:
    client-certificate-data: $(base64 -w0 "$d/$cert.crt")
    client-key-data: $(base64 -w0 "$d/$cert.key")
contexts:
- name: local
  context: {cluster: local, user: $cert, namespace: default}
current-context: local
EOF
  mv "$file.tmp" "$file"
}

kubeconfigs() {
  kubeconfig "$K8S_DIR/kubeconfig" admin
  local c
  for c in kubelet-client kube-proxy kube-scheduler; do
    kubeconfig "$K8S_DIR/$c.kubeconfig" "$c"
  done
}

wait_for() {  # wait_for <seconds> <description> <command...>
  local t=$1 what=$2; shift 2
  for _ in $(seq 1 $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "timeout waiting for $what"; return 1
}

start() {
  build
  mkdir -p "$K8S_DIR/logs"
  pki; kubeconfigs
  local d="$K8S_DIR/pki"

  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  rm -rf "$K8S_DIR/etcd"
  etcd --name local --data-dir "$K8S_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn \
    > "$K8S_DIR/logs/etcd.log" 2>&1 &
  echo $! > "$K8S_DIR/etcd.pid"
  wait_for 30 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  local admission=() node=()
  # Without kube-controller-manager nobody creates the "default" ServiceAccount or its token,
  # and the ServiceAccount admission plugin would reject every Pod (envtest disables it too).
  [ "$START_KCM" = 1 ] || admission=(--disable-admission-plugins=ServiceAccount)
  if [ -n "$ADVERTISE_ADDRESS" ]; then
    # Pods reach the API server through the `kubernetes` Service (10.0.0.1:443), whose endpoint
    # is the advertised address: listen there too. Kubelets are reached by InternalIP, with a
    # client certificate, and their serving certificates are checked against the CA.
    node=(--advertise-address="$ADVERTISE_ADDRESS" --bind-address=0.0.0.0
          --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction
          --kubelet-preferred-address-types=InternalIP --kubelet-certificate-authority="$d/ca.crt"
          --kubelet-client-certificate="$d/apiserver-kubelet-client.crt"
          --kubelet-client-key="$d/apiserver-kubelet-client.key")
  else
    # 127.0.0.1 cannot be an endpoint, so the `kubernetes` Service gets none.
    node=(--advertise-address=127.0.0.1 --bind-address=127.0.0.1 --endpoint-reconciler-type=none
          --authorization-mode=RBAC)
  fi
  log "starting kube-apiserver v$K8S_VERSION on https://127.0.0.1:$APISERVER_PORT"
  "$K8S_CACHE/bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --secure-port="$APISERVER_PORT" --insecure-port=0 \
    "${node[@]}" \
    --cert-dir="$d" --tls-cert-file="$d/apiserver.crt" --tls-private-key-file="$d/apiserver.key" \
    --client-ca-file="$d/ca.crt" \
    --service-account-key-file="$d/sa.pub" --service-account-signing-key-file="$d/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --api-audiences=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --allow-privileged=true --profiling=false \
    "${admission[@]}" \
    > "$K8S_DIR/logs/kube-apiserver.log" 2>&1 &
  echo $! > "$K8S_DIR/kube-apiserver.pid"
  local api=(curl -sf --cacert "$d/ca.crt" --cert "$d/admin.crt" --key "$d/admin.key")
  local url="https://127.0.0.1:$APISERVER_PORT"
  wait_for 120 kube-apiserver/readyz "${api[@]}" "$url/readyz"
  wait_for 60 "namespace default" "${api[@]}" "$url/api/v1/namespaces/default"

  if [ "$START_KCM" = 1 ]; then
    # nodelifecycle lifts a Ready node's not-ready taint (and evicts pods from a node that left).
    log "starting kube-controller-manager"
    "$K8S_CACHE/bin/kube-controller-manager" \
      --kubeconfig="$K8S_DIR/kubeconfig" --authentication-kubeconfig="$K8S_DIR/kubeconfig" \
      --authorization-kubeconfig="$K8S_DIR/kubeconfig" \
      --bind-address=127.0.0.1 --port=0 --secure-port=0 --leader-elect=false \
      --service-account-private-key-file="$d/sa.key" --root-ca-file="$d/ca.crt" \
      --service-cluster-ip-range="$SERVICE_CIDR" --controllers='*,-nodeipam,-cloud-node-lifecycle,-route,-service,-attachdetach,-persistentvolume-binder,-persistentvolume-expander,-bootstrapsigner,-tokencleaner' \
      > "$K8S_DIR/logs/kube-controller-manager.log" 2>&1 &
    echo $! > "$K8S_DIR/kube-controller-manager.pid"
    wait_for 60 "default ServiceAccount" "${api[@]}" "$url/api/v1/namespaces/default/serviceaccounts/default"
  fi
  log "ready"
  echo "export KUBECONFIG=$K8S_DIR/kubeconfig"
}

stop() {
  local p
  for p in kube-controller-manager kube-apiserver etcd; do
    if [ -f "$K8S_DIR/$p.pid" ]; then
      local pid; pid="$(cat "$K8S_DIR/$p.pid")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      rm -f "$K8S_DIR/$p.pid"
    fi
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  build) build ;;
  *) echo "usage: $0 [start|stop|build]" >&2; exit 2 ;;
esac
