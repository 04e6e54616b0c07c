#!/usr/bin/env bash
# Debian's chromium + chromium-driver for the search page's browser test (tests/test_search_browser.py).
# Idempotent: does nothing when both are on PATH. Never downloads a browser from anywhere but apt.
# VTR_SKIP_BROWSER=1 skips (the test then skips locally, and FAILS in CI).
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi
if [ "${VTR_SKIP_BROWSER:-0}" = 1 ]; then echo "VTR_SKIP_BROWSER=1: not installing chromium"; exit 0; fi
fail() {
  echo "could not install chromium + chromium-driver ($1); the browser test skips locally and fails in CI" >&2
  case "${CI:-}" in true|1|yes) exit 1 ;; *) exit 0 ;; esac
}
command -v apt-get >/dev/null || fail "no apt-get"
SUDO=""
if [ "$(id -u)" != 0 ]; then command -v sudo >/dev/null && SUDO="sudo -n" || fail "not root and no sudo"; fi
echo "installing chromium + chromium-driver (apt-get, ~50 s) for the browser test"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q chromium chromium-driver >/dev/null \
  || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium chromium-driver >/dev/null; } \
  || fail "apt-get install failed"
