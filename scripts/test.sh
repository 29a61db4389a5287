#!/usr/bin/env bash
# Runs every check: sets up the machine (scripts/setup.sh), checks the formatting (cargo fmt) and
# the lints (cargo clippy, warnings are errors), then runs the whole workspace's tests against real
# PostgreSQL, dlib and images. MMTT_FACES_DIR (CI: ../shared/faces) adds the real-face tests; they
# fail if it points at a missing folder. Arguments go to `cargo test` (e.g. `--test forge`);
# MMTT_SKIP_LINT=1 skips fmt and clippy when iterating on one test.
set -euo pipefail
cd "$(dirname "$0")/.."
line="$(scripts/setup.sh --print-test-url | tail -1)"
export "${line?}"
if [ -n "${MMTT_FACES_DIR:-}" ]; then
  [ -d "$MMTT_FACES_DIR" ] || { echo "MMTT_FACES_DIR=$MMTT_FACES_DIR does not exist" >&2; exit 1; }
  MMTT_FACES_DIR="$(cd "$MMTT_FACES_DIR" && pwd)"; export MMTT_FACES_DIR
fi
if [ -z "${MMTT_SKIP_LINT:-}" ]; then
  cargo fmt --all --check
  cargo clippy --workspace --all-targets --locked --quiet -- -D warnings
fi
exec cargo test --workspace --locked "$@"
