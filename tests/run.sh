#!/usr/bin/env bash
# The whole mgre test suite, as CI runs it: installs what it needs, checks formatting and the
# sans-IO rule, builds everything, then runs unit, property, fuzz-corpus and network-namespace
# tests. Needs root (namespaces, TUN devices, raw sockets). Usage: sudo bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: run as root (network namespaces, TUN devices and raw sockets need it)" >&2
    exit 1
fi

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v sysctl >/dev/null || need+=(procps)
command -v ethtool >/dev/null || need+=(ethtool)
command -v nft >/dev/null || need+=(nftables)
command -v smcrouted >/dev/null || need+=(smcroute)
command -v tshark >/dev/null || need+=(tshark)
if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# The toolchain and targets pinned in rust-toolchain.toml.
targets=$(sed -n 's/^targets *= *\[\(.*\)\]/\1/p' rust-toolchain.toml | tr -d '",')
# shellcheck disable=SC2086
rustup target add $targets >/dev/null

cargo fmt --all --check

# The protocol crate stays sans-IO: no runtime, socket or wasm engine in its dependency tree.
if cargo tree -p mgre-proto -e normal --prefix none | grep -E '^(tokio|socket2|libc|mio|wasmtime) '; then
    echo "tests/run.sh: mgre-proto must not depend on I/O or runtime crates" >&2
    exit 1
fi

cargo build --release --locked --workspace --all-targets
cargo clippy --release --locked --workspace --all-targets -- -D warnings
cargo build --release --locked -p mgre-sdk --target wasm32-unknown-unknown

# Run everything, then close with one summary line over all test binaries (the last cargo
# line alone would be some crate's empty doc-test run).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --locked --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The namespace tests once more with two dataplane workers per daemon (multi-queue TUN,
# per-worker sockets).
echo "== namespace tests again with MGRE_TEST_WORKERS=2 =="
MGRE_TEST_WORKERS=2 cargo test --release --locked -p mgre-e2e 2>&1 | tee -a "$log"
multi=${PIPESTATUS[0]}
if [ "$status" = 0 ]; then status=$multi; fi
set -e
sum() { grep -oE "test result: [A-Za-z]+\. .*" "$log" | grep -oE "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
echo "tests: $(sum passed) passed, $(sum failed) failed"
exit "$status"
