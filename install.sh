#!/usr/bin/env bash
# Create or update .venv in the repository root with everything crop-cluster needs.
#
#   bash install.sh          runtime dependencies (CUDA torch + faiss-gpu when nvidia-smi works, CPU otherwise)
#   bash install.sh --dev    the same plus the test tools, Ray for the ray tests (and Chromium for the report's
#                            browser test, iproute2 for the ray tests' private network namespace, via apt-get when
#                            missing and we are root; otherwise a note says how to get them)
#   bash install.sh --cpu    force the CPU build even on a machine with an NVIDIA driver
#   bash install.sh --ray    also Ray, for --engine ray (docs/scale-out.md)
#
# Idempotent: when nothing changed since the last successful run, it returns in about a second.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

dev=0
force_cpu=0
ray=0
for arg in "$@"; do
    case "$arg" in
        --dev) dev=1 ;;
        --cpu) force_cpu=1 ;;
        --ray) ray=1 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option '$arg' (use --dev, --cpu, --ray or --help)" >&2; exit 2 ;;
    esac
done

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
    echo "install.sh: '$python' not found; install Python 3.9+ or set PYTHON=/path/to/python3" >&2
    exit 2
fi

# One torch pin for both: PyPI's Linux wheel is the CUDA build; the project's machines serve a local CPU build.
torch_spec="torch==2.13.0"
if [ "$force_cpu" = 0 ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    extras=gpu      # faiss-gpu-cu12
else
    extras=cpu      # faiss-cpu
fi
[ "$dev" = 1 ] && extras="$extras,dev"
{ [ "$ray" = 1 ] || [ "$dev" = 1 ]; } && extras="$extras,ray"

# Debian packages some tests need (each test is skipped without its package): installed with apt-get when we are
# root, otherwise a note says how. test_tool COMMAND PACKAGE PURPOSE
test_tool() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "install.sh: installing $2 (apt-get) for $3"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" \
            >/dev/null || echo "install.sh: could not install $2; $3 will be skipped" >&2
    else
        echo "install.sh: note: $1 not found; $3 will be skipped (install it with: sudo apt-get install $2)"
    fi
}
if [ "$dev" = 1 ]; then
    test_tool ip iproute2 "the ray tests' private network namespace"
    command -v chromium-browser >/dev/null 2>&1 || test_tool chromium chromium "the report's browser test"
fi

# The stamp records what was installed; a second run with the same inputs skips pip entirely.
stamp_file=.venv/.crop-cluster-install
stamp="$(cat pyproject.toml install.sh | sha256sum | cut -c1-16) $extras $torch_spec"
if [ -x .venv/bin/python ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
    echo "install.sh: .venv is up to date ($extras)"
    exit 0
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
echo "install.sh: installing $torch_spec and crop-cluster[$extras] into .venv (a first run takes a few minutes)"
"${pip[@]}" install "$torch_spec"
"${pip[@]}" install -e ".[$extras]"
echo "$stamp" > "$stamp_file"
echo "install.sh: done; run .venv/bin/crop-cluster -h (or .venv/bin/python cluster.py -h)"
