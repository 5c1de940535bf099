#!/usr/bin/env bash
# Installs every Debian package Capstan needs to build, test and benchmark.
# Idempotent: packages already present are skipped, and apt-get update runs
# only when something is missing. Peers installed for tests (etcd, nginx,
# haproxy, varnish) are kept from starting as system services, because on a user's
# machine they would take the ports Capstan wants (2379 for etcd).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps: not root and no sudo; run this script as root" >&2
    exit 1
  fi
fi

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git clang lld libclang-rt-14-dev
  clang-format
  # libraries (see shared DESIGN.md, "Dependencies")
  librocksdb-dev libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libprotoc-dev libabsl-dev liburing-dev libnghttp2-dev libssl-dev libre2-dev openssl
  libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libsimdjson-dev
  libxxhash-dev libzstd-dev liblz4-dev libsnappy-dev libbz2-dev zlib1g-dev
  libboost-math-dev
  # ICU: the UTS #46 (IDNA) mapping and Unicode properties for internationalized URL
  # hosts in GrowthBook URL targeting (src/experiments/idna.cc); the library node links
  libicu-dev
  # the allocator of the capstan binary (threads hand buffers to each other)
  libjemalloc-dev
  # tests and benchmarks: real peers and real clients
  libgtest-dev libgmock-dev libbenchmark-dev etcd-server etcd-client
  curl python3 procps psmisc iproute2 gnuplot-nox
  # the gateway's peers and load generators (bench/gateway-vs-nginx.sh, e2e tests),
  # and the profilers the benchmarks use (perf record / perf stat; strace -c counts
  # system calls per connection in bench/l4-conn-profile.sh)
  nginx haproxy wrk nghttp2-client linux-perf strace
  # the Go etcd client Kubernetes uses (go.etcd.io/etcd/clientv3, 3.4 in bookworm)
  # and the Go compiler that builds bench/clientv3_load, the clientv3-driven rows of
  # bench/store-vs-etcd.sh (GO111MODULE=off GOPATH=/usr/share/gocode: no module proxy)
  golang-go golang-etcd-server-dev
  # LuaJIT for the gateway's edge functions, and nginx with the Lua module, their
  # OpenResty-style peer (bench/edge-vs-openresty.sh runs the same Lua in
  # access_by_lua and header_filter_by_lua). The OpenResty-maintained LuaJIT
  # (libluajit2-5.1-*) because libnginx-mod-http-lua depends on it and it
  # conflicts with Debian's other LuaJIT (libluajit-5.1-*): one of them only.
  libluajit2-5.1-dev libnginx-mod-http-lua
  # the HTTP cache's peer (bench/cache-conformance.sh, bench/cache-vs-nginx-varnish.sh;
  # nginx proxy_cache is the other): varnishd, run in the foreground by the scripts
  varnish
  # the DNS server's peers, clients and load generator (tests/e2e/dns_test.cc,
  # bench/dns-vs-nsd-knot.sh): dig, kdig, NSD, Knot, dnsperf
  bind9-dnsutils knot-dnsutils nsd knot dnsperf
  # node runs the reference GrowthBook SDK (npm) in the experiments differential test,
  # and builds the web console (console/, npm + esbuild) at build time
  nodejs
  # the web console's browser test (tests/e2e/console): headless Chromium driven by
  # puppeteer-core from npm, which downloads no browser of its own
  chromium
  # reference statistics for the experiments statistics engine (tests/stats/reference.py)
  python3-scipy python3-statsmodels
  # a gRPC client in another language against the RPC port (tests/e2e/rpc_grpc_client.py);
  # its message classes come from the system protoc at test time
  python3-grpcio python3-protobuf
  # tests/deploy/check_deploy.py reads the Kubernetes manifests
  python3-yaml
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
else
  echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
  # Keep postinst scripts from starting etcd/nginx/nsd/knot/varnish as services while we install.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created_policy=1
  fi
  trap '[ $created_policy -eq 1 ] && $SUDO rm -f '"$policy" EXIT
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm: Debian ships it as its own package, while NodeSource's nodejs bundles it
# (and conflicts with Debian's npm), so install it only when the command is missing.
if ! command -v npm >/dev/null 2>&1; then
  echo "install-deps: installing npm"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm
fi

# Whatever happened before (an older install, a package upgrade), make sure the
# test peers are not running as services holding our ports.
for svc in etcd nginx haproxy nsd knot varnish varnishncsa; do
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
  if [ -x "/etc/init.d/$svc" ]; then
    $SUDO "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
  fi
done
echo "install-deps: done"
