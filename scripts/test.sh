#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Claude Code, …),
# then runs every test. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

# CARGO_TARGET_DIR when set; otherwise one build cache under $HOME, kept
# between runs: a clean debug build with DataFusion takes 15+ minutes on
# 2 cores, and a fresh clone's own target/ would start from nothing.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tollgate-target}"
mkdir -p "$CARGO_TARGET_DIR"

# A merge's conflict markers left in any tracked file (README included,
# which no compiler reads) fail the run before anything is built.
if git rev-parse --git-dir >/dev/null 2>&1 &&
  git grep -nE '^(<<<<<<<|>>>>>>>)( |$)' -- . ':!tests/data'; then
  echo "test: merge conflict markers in the files above" >&2
  exit 1
fi

export TOLLGATE_TOOLS_DIR="${TOLLGATE_TOOLS_DIR:-$HOME/.cache/tollgate-tools}"
bash scripts/install-test-deps.sh
echo "== cargo test (target dir $CARGO_TARGET_DIR)"
cargo test --locked --workspace --lib --bins --tests "$@"
# Benchmarks are built (not run) so they cannot rot; the gateway-only build
# (no lake, no DataFusion) must keep compiling too.
echo "== cargo test --benches --no-run; cargo check --no-default-features --features gateway"
cargo test --locked --workspace --benches --no-run
cargo check --locked --no-default-features --features gateway
