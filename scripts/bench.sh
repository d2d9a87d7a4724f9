#!/usr/bin/env bash
# FastK comparison benchmark: the one command of docs/benchmarks.md.
#
#   bash scripts/bench.sh            # full run (10 symbols x 2 years of 1m bars + 20M scalar rows)
#   bash scripts/bench.sh --quick    # smoke run (2 symbols x 1 year + 2M scalar rows)
#
# Steps: cargo build --release; a venv in bench/.venv with the pinned peers of
# bench/requirements.txt; PostgreSQL and wrk from apt when missing (as root); the Rust
# harnesses (cargo bench --bench storage / predicate / flight_ceiling); then the Python
# driver (python -m fastk_bench), which generates the dataset, loads it into every
# system, runs every workload and group the page reports (the reads, SQL, market
# queries, colocated, compression, shards, TLS and the feed workloads), checks the
# checksum of every timed answer (a wrong one fails the run: exit status 1) and writes
# one results.json and the charts. About 40 minutes for a full run on 2 cores.
#
# Outputs: bench/results/<full|quick>/results.json, tables.md and logs. A full run also
# rewrites the charts in docs/benchmarks/ and the result blocks of docs/benchmarks.md;
# a quick run leaves the docs alone and puts its charts next to its results.
#
# Every server it starts (FastK, PostgreSQL, ROAPI, the in-memory Flight servers)
# binds 127.0.0.1 only and is stopped before it exits.
#
# Environment:
#   PYTHON        interpreter for the venv (default: python3.11, else python3)
#   BENCH_SKIP    comma-separated systems to leave out, e.g. "ROAPI,PostgreSQL"
#   BENCH_WORK    scratch directory for the systems' data (default: a fresh temp dir)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODE=full
for arg in "$@"; do
    case "$arg" in
        --quick) MODE=quick ;;
        -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done
OUT="bench/results/$MODE"
mkdir -p "$OUT"
started=$SECONDS
say() { printf '\n== %s (%ss)\n' "$*" $((SECONDS - started)); }

say "cargo build --release"
cargo build --release --bin fastk

say "python venv (bench/.venv) and pinned peers"
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
fi
if [ ! -x bench/.venv/bin/python ]; then
    "$py" -m venv bench/.venv
    bench/.venv/bin/python -m pip install --quiet --upgrade pip
fi
# When the pinned versions are installed already, pip does not touch the network.
bench/.venv/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
PY=bench/.venv/bin/python

say "system packages (PostgreSQL, wrk)"
apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "not root or no apt-get: cannot install $*; the driver records the skip"
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || true
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
        echo "apt-get install $* failed; the driver records the skip"
}
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql-15
fi
ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sed 's/^/postgresql: /' || true
command -v wrk >/dev/null 2>&1 || apt_install wrk
command -v wrk >/dev/null 2>&1 && wrk --version 2>&1 | head -1 || true

scratch="${BENCH_WORK:-$(mktemp -d -t fastk-bench-XXXXXX)}"
mkdir -p "$scratch"
chmod 755 "$scratch" # the postgres user must reach its data directory inside
cleanup() { [ -z "${BENCH_WORK:-}" ] && rm -rf "$scratch"; return 0; }
trap cleanup EXIT

say "Rust harnesses: cargo bench --bench storage, --bench predicate"
quick_env=()
[ "$MODE" = quick ] && quick_env=(FASTK_BENCH_QUICK=1)
rm -f "$OUT/predicate.json"
if env "${quick_env[@]}" FASTK_BENCH_DIR="$scratch" cargo bench --bench storage >"$OUT/rust_storage.txt" 2>"$OUT/rust_storage.log"; then
    grep -v '^$' "$OUT/rust_storage.txt" || true
else
    echo "cargo bench --bench storage failed: see $OUT/rust_storage.log"
fi
if env "${quick_env[@]}" FASTK_BENCH_DIR="$scratch" cargo bench --bench predicate >"$OUT/rust_predicate.txt" 2>"$OUT/rust_predicate.log"; then
    cat "$OUT/rust_predicate.txt"
    cp target/bench-results/predicate.json "$OUT/predicate.json"
    # The repository's own DuckDB peer script; the driver repeats its measurement with
    # the DuckDB 2 API, so a failure here is recorded, not fatal.
    if ! "$PY" scripts/bench_predicate_duckdb.py >"$OUT/bench_predicate_duckdb.txt" 2>&1; then
        echo "scripts/bench_predicate_duckdb.py failed (see $OUT/bench_predicate_duckdb.txt); the driver measures DuckDB itself"
    fi
    sed -i "s|$PWD/||g" "$OUT/bench_predicate_duckdb.txt" # no machine paths in committed output
else
    echo "cargo bench --bench predicate failed: see $OUT/rust_predicate.log"
fi

say "Rust in-memory Flight server and client (cargo bench --bench flight_ceiling --no-run)"
# The driver starts this executable itself (as a server and as a client), so it needs
# the path; cargo prints it in the build's JSON messages.
ceiling_bin=$(cargo bench --bench flight_ceiling --no-run --message-format=json 2>"$OUT/flight_ceiling_build.log" |
    "$PY" -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "flight_ceiling" and m.get("executable"):
        print(m["executable"])' | tail -1) || true
echo "flight_ceiling: ${ceiling_bin:-not built (see $OUT/flight_ceiling_build.log)}"

say "comparison driver (python -m fastk_bench)"
args=(--out "$OUT" --rust-results "$OUT" --work "$scratch/systems" --skip "${BENCH_SKIP:-}")
[ -n "$ceiling_bin" ] && args+=(--ceiling-bin "$ceiling_bin")
if [ "$MODE" = quick ]; then
    args+=(--quick)
else
    args+=(--charts docs/benchmarks --docs docs/benchmarks.md)
fi
PYTHONPATH=bench "$PY" -m fastk_bench "${args[@]}"

say "done: $OUT/results.json"
