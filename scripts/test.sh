#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, documentation,
# every unit, integration and doc test, and the examples.
#
# Idempotent and self-contained: it needs the Rust toolchain (pinned by
# rust-toolchain.toml), python3 with pip and a C++ compiler; scripts/local-model.sh
# installs the offline model the real-LLM tests use (and cmake with apt-get when
# missing), scripts/tools.sh installs promtool (Debian's prometheus package),
# scripts/services.sh starts Redis and PostgreSQL on 127.0.0.1 (installing them
# with apt-get when missing), all reusing what is already installed or running. cargo-nextest is used when
# installed, cargo test otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "formatting"
cargo fmt --all --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "documentation"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "offline model (SmolLM2-135M + llama-server)"
scripts/local-model.sh

step "services (Redis, PostgreSQL on 127.0.0.1)"
scripts/services.sh

step "tools (promtool)"
scripts/tools.sh

step "Prometheus configuration and alerting rules"
promtool check rules deploy/prometheus/alerts.yml
promtool check config deploy/prometheus/prometheus.yml
promtool test rules deploy/prometheus/alerts_test.yml

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    echo "cargo-nextest is not installed; using cargo test"
    cargo test --workspace --locked --lib --bins --tests --no-fail-fast
fi

step "doc tests"
cargo test --workspace --locked --doc

step "examples"
for dir in examples/*/; do
    cargo run --quiet --locked -p "example-$(basename "$dir")" >/dev/null
    echo "example $(basename "$dir"): ok"
done

step "all checks passed"
