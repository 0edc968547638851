#!/usr/bin/env bash
# Re-captures what a Claude Code release sends, in every mode tollgate
# serves, into tests/data/claude-code/captured/<version>/<mode>/: the replay
# tests (tests/it/captures.rs) then check tollgate against them.
#
# Usage: scripts/capture/capture-claude-code.sh [VERSION]   (default: the
# first of CLAUDE_CODE_VERSIONS in scripts/install-test-deps.sh). Installs
# that release under $TOLLGATE_TOOLS_DIR like the tests do; needs python3,
# npm and tmux. Moving the pin: add the version to CLAUDE_CODE_VERSIONS, run
# this, commit the captures.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
tools="${TOLLGATE_TOOLS_DIR:-$HOME/.cache/tollgate-tools}"
default_version=$(sed -n 's/^CLAUDE_CODE_VERSIONS="\([^ "]*\).*/\1/p' scripts/install-test-deps.sh)
version="${1:-$default_version}"
claude="$tools/claude-code-$version/node_modules/.bin/claude"
if [ ! -x "$claude" ]; then
  mkdir -p "$tools/claude-code-$version"
  npm install --silent --no-audit --no-fund --prefix "$tools/claude-code-$version" \
    "@anthropic-ai/claude-code@$version"
fi
out="$repo/tests/data/claude-code/captured/$version"
rm -rf "$out"
work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  tmux kill-session -t tollgate-capture 2>/dev/null || true
  rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

# A free port for the capture server.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"

# Starts the capture server writing into $out/$1 (extra flags after).
start_server() {
  local mode="$1"; shift
  current_mode="$mode"
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  python3 "$repo/scripts/capture/claude_code_capture.py" --port "$port" --out "$out/$mode" "$@" \
    >"$work/server-$mode.log" 2>&1 &
  server_pid=$!
  # Ready once it says so (a probe request would be captured as the client's).
  for _ in $(seq 1 100); do
    grep -q "capture server on" "$work/server-$mode.log" && return 0
    sleep 0.05
  done
  echo "capture server did not start: $(cat "$work/server-$mode.log")" >&2
  exit 1
}

# Runs `claude -p PROMPT` in a fresh HOME with the given VAR=VALUE settings.
run_print() {
  local prompt="$1"; shift
  local home="$work/home-$RANDOM"
  mkdir -p "$home"
  (cd "$home" && env -i PATH="$PATH" HOME="$home" DISABLE_TELEMETRY=1 \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 CLAUDE_CODE_MAX_RETRIES=0 "$@" \
    timeout 120 "$claude" -p "$prompt" --output-format json >"$home/stdout" 2>&1) \
    || { echo "claude failed ($current_mode): $(cat "$home/stdout")" >&2; exit 1; }
}

gateway=(CLAUDE_CODE_USE_GATEWAY=1 ANTHROPIC_BASE_URL="$base" ANTHROPIC_AUTH_TOKEN=tg-capture-key)
bedrock=(CLAUDE_CODE_USE_BEDROCK=1 CLAUDE_CODE_SKIP_BEDROCK_AUTH=1 ANTHROPIC_BEDROCK_BASE_URL="$base"
  AWS_REGION=us-east-1 ANTHROPIC_CUSTOM_HEADERS="x-tollgate-api-key: tg-capture-key")
vertex=(CLAUDE_CODE_USE_VERTEX=1 CLAUDE_CODE_SKIP_VERTEX_AUTH=1 ANTHROPIC_VERTEX_BASE_URL="$base"
  ANTHROPIC_VERTEX_PROJECT_ID=capture-project CLOUD_ML_REGION=us-east5
  ANTHROPIC_CUSTOM_HEADERS="x-tollgate-api-key: tg-capture-key")

echo "capturing Claude Code $version into $out"
start_server first-party
run_print "Say hello." ANTHROPIC_BASE_URL="$base" ANTHROPIC_AUTH_TOKEN=tg-capture-key
start_server gateway-subagent --subagent
run_print "Use a subagent to say hello." "${gateway[@]}"
start_server gateway-discovery
run_print "Say hello." "${gateway[@]}" CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY=1
start_server bedrock
run_print "Say hello." "${bedrock[@]}"
start_server bedrock-gateway
run_print "Say hello." "${bedrock[@]}" CLAUDE_CODE_USE_GATEWAY=1
start_server vertex
run_print "Say hello." "${vertex[@]}"
start_server vertex-gateway
run_print "Say hello." "${vertex[@]}" CLAUDE_CODE_USE_GATEWAY=1

# The interactive client in gateway mode: a prompt, then /usage. Onboarding
# and the folder-trust question are answered in the seeded ~/.claude.json.
start_server gateway-interactive
home="$work/home-interactive"
mkdir -p "$home"
printf '{"hasCompletedOnboarding":true,"projects":{"%s":{"hasTrustDialogAccepted":true}}}\n' "$home" \
  >"$home/.claude.json"
tmux new-session -d -s tollgate-capture -x 160 -y 50 -c "$home" \
  env -i PATH="$PATH" HOME="$home" TERM=xterm-256color DISABLE_TELEMETRY=1 "${gateway[@]}" "$claude"
screen() { tmux capture-pane -p -t tollgate-capture; }
wait_for() {
  for _ in $(seq 1 200); do
    screen | grep -q "$1" && return 0
    sleep 0.2
  done
  echo "the interactive client never showed \"$1\":" >&2; screen >&2; exit 1
}
# Typed text is dropped until the input box is live: wait for its footer,
# and send the text and Enter apart (as a person types).
type_line() {
  tmux send-keys -t tollgate-capture "$1"
  sleep 0.5
  tmux send-keys -t tollgate-capture Enter
}
wait_for 'shift+tab to cycle'
sleep 1
type_line 'Say hello.'
wait_for 'Hello from the capture server'
type_line '/usage'
wait_for 'Esc to close'
screen >"$out/gateway-interactive/screen-after-usage.txt"
tmux send-keys -t tollgate-capture Escape
tmux kill-session -t tollgate-capture

echo "captured:"
find "$out" -type f | sort | sed "s|$repo/||"
