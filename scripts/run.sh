#!/usr/bin/env bash
# Runs tollgate on its embedded default: builds it, writes a starter
# tollgate.toml (printing your key) if there is none, and serves.
set -euo pipefail
manifest="$(cd "$(dirname "$0")/.." && pwd)/Cargo.toml"
cargo build --release --locked --manifest-path "$manifest"
bin="${CARGO_TARGET_DIR:-$(dirname "$manifest")/target}/release/tollgate"
[ -f tollgate.toml ] || "$bin" init
exec "$bin" serve "$@"
