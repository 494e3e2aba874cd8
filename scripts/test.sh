#!/usr/bin/env bash
# Every check: lint, type check, then all tests with Node's runner (one file at a time on a 2-core box).
set -euo pipefail
cd "$(dirname "$0")/.."
npx biome check .
npx tsc --noEmit
mapfile -t files < <(find test -name '*.test.ts' | sort)
# Every log the run keeps, and every secret it used: no secret may be in any log (checked at the end).
VMEDIA_TEST_LOG_DIR=$(mktemp -d)
export VMEDIA_TEST_LOG_DIR
trap 'rm -rf "$VMEDIA_TEST_LOG_DIR"' EXIT
status=0
node --import tsx --test --test-concurrency=1 "$@" "${files[@]}" || status=$?
node --import tsx scripts/check-test-logs.ts "$VMEDIA_TEST_LOG_DIR" || status=1
exit "$status"
