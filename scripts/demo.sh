#!/usr/bin/env bash
# The demo: sets up the machine, builds mmtt, imports the sample faces (plus --faces DIR),
# plans masks, writes previews, forges every face, gives each forgery an accepted demo caption
# (generated, by the account `demo`: not a human explanation) and serves the web app. Extra
# arguments go to `mmtt demo` (e.g. --faces DIR, --no-serve).
# Uses DATABASE_URL when set, else mmtt's private PostgreSQL cluster under the data directory.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
data="${MMTT_DATA_DIR:-$PWD/mmtt-data}"
if [ "$(id -u)" -eq 0 ] && [ -z "${DATABASE_URL:-}" ] && [ -z "${MMTT_DATA_DIR:-}" ] \
   && ! runuser -u postgres -- test -x "$PWD"; then
  # as root the private cluster runs as `postgres`, which cannot enter this checkout
  data="/var/lib/mmtt-demo"
  echo "demo: the postgres user cannot enter $PWD; using --data-dir $data" >&2
fi
# the same command (and so the same feature set) as scripts/test.sh: after the tests, nothing is
# compiled again (`cargo build --bin mmtt` alone would build the dependency tree a second time,
# without the dev-dependencies' features); it also builds target/debug/mmtt
cargo test --workspace --locked --quiet --no-run
exec target/debug/mmtt --data-dir "$data" demo "$@"
