#!/usr/bin/env bash
# Every check: lint, type check, then all tests with Node's runner (one file at a time on a 2-core box).
set -euo pipefail
cd "$(dirname "$0")/.."
npx biome check .
npx tsc --noEmit
mapfile -t files < <(find test -name '*.test.ts' | sort)
exec node --import tsx --test --test-concurrency=1 "$@" "${files[@]}"
