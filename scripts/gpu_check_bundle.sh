#!/usr/bin/env bash
# Prepare .gpu_bundle/ (git-ignored) for the GPU check on the lent GPU machine (`make gpu-bundle`):
# the wheels of requirements/gpu-bundle.txt (what that machine's image lacks), for CPython 3.12 on
# manylinux x86_64, plus cp311 stand-ins of the compiled ones (the dry run here has Python 3.11; pip
# on either side picks the wheel of its own interpreter). Needs the package index (pip), not a GPU.
# Writes requirements/gpu-bundle.manifest (size + name of every wheel; tests/test_gpu_bundle.py keeps
# it and the project's files under the device tool's 64 MiB) and prints the total that travels.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
REQ=requirements/gpu-bundle.txt
MANIFEST=requirements/gpu-bundle.manifest
DIR=.gpu_bundle
LIMIT=$((64 * 1024 * 1024))
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

tmp=$(mktemp -d "$PWD/.gpu_bundle.tmp.XXXXXX")
chmod 755 "$tmp"  # mktemp makes it 0700
trap 'rm -rf "$tmp"' EXIT
grep -v '^\s*#' "$REQ" | grep -v '# sdist' | sed 's/\s*#.*//' | grep . > "$tmp/wheels.txt"
grep '# sdist' "$REQ" | sed 's/\s*#.*//' > "$tmp/sdists.txt"
for pyver in 3.12 3.11; do  # 3.12: the GPU image; 3.11: stand-ins for the dry run on this machine
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    "${PLATFORMS[@]}" -d "$tmp" -r "$tmp/wheels.txt" 2>&1 | { grep -v 'is ignored' || true; }
done
# pure-Python packages published only as sdists: build their wheels here (no compiler involved)
"$PY" -m pip wheel -q --no-deps -w "$tmp" -r "$tmp/sdists.txt" 2>&1 | { grep -v 'is ignored' || true; }
rm -f "$tmp"/*.txt
n_req=$(grep -v '^\s*#' "$REQ" | grep -c .)
n_pkg=$(ls "$tmp"/*.whl | xargs -n1 basename | cut -d- -f1 | sort -u | wc -l)
[ "$n_pkg" -eq "$n_req" ] || { echo "gpu-bundle: $n_pkg packages for $n_req requirements" >&2; exit 1; }

rm -rf "$DIR" && mv "$tmp" "$DIR" && trap - EXIT
{
  echo "# size name: the wheels of .gpu_bundle/ (written by scripts/gpu_check_bundle.sh; do not edit)"
  (cd "$DIR" && stat -c '%s %n' *.whl | sort -k2)
} > "$MANIFEST.tmp" && mv "$MANIFEST.tmp" "$MANIFEST"

bundle=$(cat "$DIR"/*.whl | wc -c)
# what the device tool sends: tracked + untracked-not-ignored files, plus the carried .gpu_bundle
project=$(git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
total=$((bundle + project))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "gpu-bundle: $(ls "$DIR"/*.whl | wc -l) wheels in $DIR: $(mib "$bundle"); project files $(mib "$project");" \
     "total $(mib "$total") of the device tool's 64 MiB"
git diff --quiet -- "$MANIFEST" 2>/dev/null || echo "gpu-bundle: $MANIFEST changed: commit it"
[ "$total" -le "$LIMIT" ] || { echo "gpu-bundle: over 64 MiB: carry less" >&2; exit 1; }
