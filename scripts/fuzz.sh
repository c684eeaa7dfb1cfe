#!/usr/bin/env bash
# Coverage-guided fuzzing of the RESP code (cargo-fuzz / libFuzzer); not part of CI.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS is the time PER TARGET (default 600: the three targets take 30 minutes in all).
# TARGETs default to all of them: request_decoder, reply_scanner, value_parse (fuzz/fuzz_targets/).
#
# Installs what it needs when missing: a nightly toolchain (`rustup toolchain install nightly
# --profile minimal`) and cargo-fuzz (`cargo install cargo-fuzz --locked`). Targets run one after
# another, one libFuzzer process each (no -jobs/-workers), with debug assertions on.
#
# Corpus handling: each target starts from its committed corpus (fuzz/corpus/TARGET) plus the
# hand-written seeds (fuzz/seeds/TARGET, never modified). New inputs go to a scratch copy under
# fuzz/work/ (git-ignored, recreated each run); at the end that copy is minimized with
# `cargo fuzz cmin` (set-cover merge) and replaces fuzz/corpus/TARGET, so the repository only ever gets a
# minimized corpus (review it with `git status fuzz/corpus`, commit it or `git checkout` it).
# FUZZ_KEEP_CORPUS=0 leaves fuzz/corpus untouched. libFuzzer's log for each target is
# fuzz/work/TARGET.log; its closing statistics are printed.
#
# Exits non-zero if any target fails or leaves a crash, timeout or out-of-memory artifact
# (fuzz/artifacts/TARGET/, git-ignored); reproduce one with
#   cargo +nightly fuzz run -a TARGET fuzz/artifacts/TARGET/<file>
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

seconds=${1:-600}
shift || true
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=(request_decoder reply_scanner value_parse)
fi
if ! [[ $seconds =~ ^[0-9]+$ ]] || [[ $seconds -eq 0 ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi

run() {
    echo "+ $*" >&2
    "$@"
}

# libFuzzer and the sanitizer flags cargo-fuzz passes need a nightly compiler.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    run rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    run cargo install cargo-fuzz --locked
fi

# -a: debug assertions (and overflow checks) on, so the code's own debug_assert!s count too.
fuzz=(cargo +nightly fuzz)
build_flags=(-a)
# `cargo fuzz build` takes one target or none (= all).
if [[ $# -eq 0 ]]; then
    run "${fuzz[@]}" build "${build_flags[@]}"
else
    for target in "${targets[@]}"; do
        run "${fuzz[@]}" build "${build_flags[@]}" "$target"
    done
fi

work=$root/fuzz/work
mkdir -p "$work"
failed=()
for target in "${targets[@]}"; do
    corpus=$root/fuzz/corpus/$target
    seeds=$root/fuzz/seeds/$target
    scratch=$work/corpus/$target
    artifacts=$root/fuzz/artifacts/$target
    log=$work/$target.log
    mkdir -p "$corpus" "$seeds" "$artifacts"
    rm -rf "$scratch"
    mkdir -p "$scratch"
    cp -rp "$corpus"/. "$scratch"/
    before=$(find "$corpus" -type f | wc -l)
    marker=$work/$target.started
    touch "$marker"

    echo "== $target: ${seconds}s, corpus $before files (+ $(find "$seeds" -type f | wc -l) seeds)" >&2
    # New inputs land in the first directory, the scratch copy. -timeout: a slow unit is a
    # finding too (a decoder that goes quadratic). -print_final_stats: the figures reported.
    status=0
    run "${fuzz[@]}" run "${build_flags[@]}" "$target" "$scratch" "$seeds" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E '^#[0-9]+[[:space:]]+DONE|^stat::|^Done [0-9]+ runs' "$log" >&2 || true
    new_artifacts=$(find "$artifacts" -type f -newer "$marker" | wc -l)
    if [[ $status -ne 0 || $new_artifacts -gt 0 ]]; then
        echo "!! $target: exit $status, $new_artifacts new artifact(s) in $artifacts; see $log" >&2
        grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" >&2 || true
        failed+=("$target")
        continue
    fi

    if [[ ${FUZZ_KEEP_CORPUS:-1} != 0 ]]; then
        # -set_cover_merge keeps a smallest set of inputs covering every feature (about half
        # of what plain -merge keeps), which keeps the committed corpus to a few hundred files.
        run "${fuzz[@]}" cmin "${build_flags[@]}" "$target" "$scratch" -- -set_cover_merge=1 \
            >>"$log" 2>&1
        rm -rf "$corpus"
        mkdir -p "$corpus"
        cp -rp "$scratch"/. "$corpus"/
    fi
    echo "== $target: corpus $before -> $(find "$corpus" -type f | wc -l) files" >&2
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzzing passed: ${targets[*]} (${seconds}s each)" >&2
