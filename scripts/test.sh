#!/usr/bin/env bash
# The project's test command (the README and CI run exactly this):
#   installs redis-server/redis-cli (and valkey-server/valkey-cli) if missing, then formatting,
#   lints, every test target (unit, integration against real redis-server clusters, benches
#   compiled and run once in test mode), doc tests, and the integration tests again against
#   valkey-server clusters.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

run() {
    echo "+ $*" >&2
    "$@"
}

export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

run bash scripts/install-deps.sh
run cargo fmt --all -- --check
run cargo clippy --locked --all-targets -- -D warnings
# The criterion benches in their real (release) profile: they must keep compiling.
run cargo bench --locked --no-run
# --all-targets also builds the criterion benches and runs each once in test mode, so they
# must at least compile and not panic; doc tests are not part of --all-targets.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run cargo test --locked --all-targets 2>&1 | tee "$log"
run cargo test --locked --doc 2>&1 | tee -a "$log"
# The same integration tests against Valkey 8 nodes (valkey-server/valkey-cli): most managed
# clusters run Valkey now, and it differs in places (CLUSTER SHARDS grouping, error texts).
run env SLOTPROXY_TEST_BACKEND=valkey cargo test --locked --tests 2>&1 | tee -a "$log"
# One total over every test binary, as the last line (the last binary alone, a bench in test
# mode, runs no test and would misrepresent the run).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "test.sh: all checks passed\n%d passed, %d failed\n", p, f }' "$log"
