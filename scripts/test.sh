#!/usr/bin/env bash
# The test command of atomfs (README.md "Test it"). Installs what it needs on
# a fresh Debian machine of this kind (as root), then runs every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

log "tools"
bash scripts/install-deps.sh

log "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "unit, conformance, crash and integration tests"
cargo nextest run --workspace --no-fail-fast --cargo-profile test
