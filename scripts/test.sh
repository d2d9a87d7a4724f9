#!/usr/bin/env bash
# The whole FastK test suite: the one test command of the README.
#
#   bash scripts/test.sh
#
# Runs, in order: cargo fmt --check, cargo clippy (warnings are errors), cargo test,
# cargo build --benches --bin fastk (the benches compile and link, and the debug
# binary for the Python suite), then the Python suite (tests/python) in a venv at
# .venv against that binary. On a fresh machine it also installs what the ops checks
# need (docker-compose from apt, when running as root) and the console test's browser
# (chromium and chromium-driver from apt, likewise). Every step runs even when an
# earlier one failed, so one run shows every problem; the exit status is non-zero if
# any step failed. On a fresh clone (no target/ yet, as in CI) it spares the disk: no
# incremental caches, executables linked without debug info, no pip cache, and the
# integration-test executables deleted once the cargo tests are over. After every step
# it prints the free space and target/'s size.
#
# Environment:
#   FASTK_TEST_LONG=1   long modes (more iterations, bigger data), passed through to
#                       cargo test and pytest.
#   PYTHON              interpreter for the venv (default: python3.11, else python3).
#   PYTEST_ARGS         extra arguments for pytest (e.g. "-k flight -x").
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export FASTK_TEST_LONG="${FASTK_TEST_LONG:-0}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

# A fresh clone (no target/ yet, as in CI) builds everything once: incremental caches
# would only cost disk (a large share of a debug build's target/) and time.
# A developer's tree that already has target/ keeps incremental builds.
fresh_tree=0
if [ ! -d target ]; then
    fresh_tree=1
    if [ -z "${CARGO_INCREMENTAL:-}" ]; then
        export CARGO_INCREMENTAL=0
    fi
    # Debug info is most of a test executable's bytes (`strip --strip-debug` took one
    # from 76 MB to 18 MB); linked without it, the suite's executables took 2.9 GB
    # together instead of 5.4. A panic still names its file and line (that comes from
    # the panic's location, not from debug info).
    export CARGO_PROFILE_DEV_STRIP="${CARGO_PROFILE_DEV_STRIP:-debuginfo}"
    # pip's cache would hold a second copy of every wheel (pyarrow, polars, grpcio, ...)
    # on a disk the run may be short of.
    export PIP_NO_CACHE_DIR="${PIP_NO_CACHE_DIR:-1}"
fi

failed=()
passed=()
skipped=()
started_at=$SECONDS

section() {
    printf '\n==============================================================\n'
    printf '== %s\n' "$*"
    printf '==============================================================\n'
}

# step NAME COMMAND...: runs a command under a header and records the outcome.
step() {
    local name="$1"
    shift
    section "$name"
    local t0=$SECONDS
    "$@"
    local rc=$?
    if [ "$rc" -eq 0 ]; then
        passed+=("$name")
        printf -- '-- ok: %s (%ss)\n' "$name" $((SECONDS - t0))
    else
        failed+=("$name (exit $rc)")
        printf -- '-- FAILED: %s (exit %s)\n' "$name" "$rc"
    fi
    disk_line
    return 0
}

# disk_line: what is left on the file system and what target/ holds, after every step,
# so that a run that fills the disk says which step took it.
disk_line() {
    local free target_size
    free="$(df -h . 2>/dev/null | tail -n 1 | awk '{print $4 " of " $2}')"
    target_size="$(du -sh target 2>/dev/null | cut -f1)"
    printf -- '-- disk: %s free; target/ %s\n' "${free:-?}" "${target_size:-none}"
}

# prune_test_binaries: on a fresh tree (CI), the integration-test executables are
# deleted once every cargo step that runs them is over. Each links the whole of
# DataFusion (tens of them, gigabytes together); no later step needs them, and the
# Python suite needs the room. A developer's tree keeps them, so the next run links
# nothing it need not.
prune_test_binaries() {
    if [ "$fresh_tree" != 1 ]; then
        echo "kept: target/ was here before this run"
        return 0
    fi
    local list
    list="$(cargo test --no-run --message-format=json 2>/dev/null |
        grep -o '"executable":"[^"]*"' | sed -e 's/^"executable":"//' -e 's/"$//')" || return 1
    if [ -z "$list" ]; then
        echo "cargo named no test executables"
        return 1
    fi
    local n=0 f
    while IFS= read -r f; do
        case "$f" in
        */target/debug/deps/*) rm -f -- "$f" && n=$((n + 1)) ;;
        esac
    done <<<"$list"
    echo "deleted $n test executables"
}

# apt_install WHO PACKAGE...: installs Debian packages that the tests of WHO need,
# when running as root with apt-get. It never fails the run: without the packages
# those tests report themselves skipped, never passed. Returns 1 when nothing was
# installed, so the caller prints its "installed" line only on success.
apt_install() {
    local who="$1"
    shift
    if [ "$(id -u)" != 0 ]; then
        echo "$* missing and not root: $who will skip"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$* missing and apt-get unavailable: $who will skip"
        return 1
    fi
    echo "installing $* from apt"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get update -qq; then
        echo "apt-get update failed: $who will skip"
        return 1
    fi
    if ! apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
        echo "apt-get install $* failed: $who will skip"
        return 1
    fi
}

install_docker_compose() {
    if command -v docker-compose >/dev/null 2>&1; then
        echo "docker-compose present: $(docker-compose version --short 2>/dev/null || echo '?')"
        return 0
    fi
    apt_install "the compose checks" docker-compose &&
        echo "installed: $(docker-compose version --short 2>/dev/null || echo docker-compose)"
    return 0
}

install_chromium() {
    # For tests/python/test_console.py (headless Chromium through Selenium).
    if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
        echo "chromium present: $(chromium --version 2>/dev/null | head -n 1 || echo '?')"
        return 0
    fi
    apt_install "the console test" chromium chromium-driver &&
        echo "installed: $(chromium --version 2>/dev/null | head -n 1 || echo chromium)"
    return 0
}

install_openssl() {
    # For tests/python/test_security.py and the tls bench: certificates made by the tests.
    if command -v openssl >/dev/null 2>&1; then
        echo "openssl present: $(openssl version 2>/dev/null || echo '?')"
        return 0
    fi
    apt_install "the TLS tests" openssl &&
        echo "installed: $(openssl version 2>/dev/null || echo openssl)"
    return 0
}

python_env() {
    local py="${PYTHON:-}"
    if [ -z "$py" ]; then
        if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "creating .venv with $py ($("$py" --version 2>&1))"
        "$py" -m venv .venv || return 1
    fi
    # Pinned versions; when they are already installed pip does not touch the network.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        -r tests/python/requirements.txt || return 1
    # The client package (clients/python), as a user installs it; test_client_package.py
    # imports it from here. Its build backend (setuptools) comes from PyPI on a fresh
    # machine, then from pip's cache.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check ./clients/python || return 1
    # pip builds in the source tree: leave no build/ or egg-info behind.
    rm -rf clients/python/build clients/python/fastk.egg-info
    .venv/bin/python -c 'import pyarrow, polars, schemathesis, openapi_python_client; print("pyarrow", pyarrow.__version__, "| polars", polars.__version__)'
    # The package's own code is typed: mypy --strict, a few seconds.
    .venv/bin/python -m mypy --strict --no-error-summary clients/python/fastk || return 1
    echo "mypy --strict clients/python/fastk: ok"
}

run_pytest() {
    # Exit 5 means pytest collected no test: that is a broken suite, not a pass.
    # shellcheck disable=SC2086
    .venv/bin/python -m pytest tests/python ${PYTEST_ARGS:-}
    local rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "pytest collected no tests: tests/python is broken"
        return 1
    fi
    return "$rc"
}

echo "FastK test suite: $(git rev-parse --short HEAD 2>/dev/null || echo 'no git') on $(nproc) cores, FASTK_TEST_LONG=$FASTK_TEST_LONG"
cargo --version
rustc --version

# The disk the run starts with: a test that needs room (the registry, the Python venv)
# fails differently on a full disk, and this line says so at once.
section "disk"
df -h . 2>/dev/null | tail -n 1 | awk '{print "free on this file system: " $4 " of " $2}'
step "cargo fmt --check" cargo fmt --all --check
step "cargo clippy --all-targets -- -D warnings" cargo clippy --all-targets -- -D warnings
step "cargo test" cargo test

# The full-disk tests mount a small tmpfs, which needs root and mount permission: they
# are #[ignore]d in `cargo test` and run here on purpose where a probe mount works, or
# are reported skipped (never passed).
full_disk_tests() {
    local probe
    probe="$(mktemp -d)"
    if ! mount -t tmpfs -o size=1m tmpfs "$probe" 2>/dev/null; then
        rmdir "$probe"
        echo "SKIPPED: the full-disk tests (tests/ops_faults.rs, tests/admin_maintain.rs) cannot mount a tmpfs here (need root and mount permission)"
        skipped+=("full-disk tests on a tmpfs (cannot mount here)")
        return 0
    fi
    umount "$probe"
    rmdir "$probe"
    cargo test --test ops_faults --test admin_maintain -- --ignored
}
step "cargo test: full-disk tests on a tmpfs (--ignored)" full_disk_tests
step "delete the test executables (fresh tree only)" prune_test_binaries
# The benches are built in the test profile, not with `cargo bench --no-run`: that
# would be a second full build of every crate with release optimisations (about 700 s
# on 2 cores) to prove what this proves too, that every bench compiles and links.
# Benches selected means dev-dependencies are on, so the crates' features are those
# `cargo test` just built with and only the bench binaries are new; the debug binary
# comes out of the same step (a separate `cargo build --bin fastk` resolves features
# without dev-dependencies and rebuilds the crates they touch).
step "cargo build --benches --bin fastk (benches build; debug binary)" cargo build --benches --bin fastk
step "tools for the ops checks (docker-compose)" install_docker_compose
step "browser for the console test (chromium)" install_chromium
step "openssl for the TLS tests" install_openssl
step "python venv (.venv) and pinned requirements" python_env
if [[ " ${failed[*]:-} " == *"python venv"* || " ${failed[*]:-} " == *"cargo build"* ]]; then
    # Running the suite against a stale binary or a half-installed venv would mislead.
    section "pytest tests/python"
    echo "not run: the Python environment or the debug binary could not be built"
    failed+=("pytest tests/python (not run)")
else
    step "pytest tests/python" run_pytest
fi

section "summary ($((SECONDS - started_at))s)"
for s in "${passed[@]}"; do printf 'ok       %s\n' "$s"; done
for s in "${skipped[@]:-}"; do [ -n "$s" ] && printf 'SKIPPED  %s\n' "$s"; done
for s in "${failed[@]:-}"; do [ -n "$s" ] && printf 'FAILED   %s\n' "$s"; done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "test.sh: ${#failed[@]} step(s) failed"
    exit 1
fi
echo "test.sh: every step passed"
