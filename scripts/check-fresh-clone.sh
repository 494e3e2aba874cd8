#!/usr/bin/env bash
# Proves the README's two commands on a fresh clone of HEAD: `npm start` reaches its ready line and
# serves the Redfish service root, Ctrl-C leaves no process behind, and `npm test` passes.
# Usage: scripts/check-fresh-clone.sh [--start-only] [--without-shared]
#   --without-shared: a clone as the public repository gives it, with no DMTF bundle beside it
#   (the conformance group must then say it skipped, and everything else must pass).
set -euo pipefail
source_repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
stack_pid=
cleanup() {
  [[ -n "$stack_pid" ]] && kill -KILL -- "-$stack_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start_only=false with_shared=true
for arg in "$@"; do
  case $arg in
    --start-only) start_only=true ;;
    --without-shared) with_shared=false ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done

git clone -q "$source_repo" "$work/vmedia"
# Like CI: the read-only shared/ material (DMTF schemas, registry) sits beside the clone.
if $with_shared && [[ -d "$source_repo/../shared" ]]; then
  ln -s "$(cd "$source_repo/../shared" && pwd)" "$work/shared"
fi
cd "$work/vmedia"
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')

echo "== npm start (port $port)"
VMEDIA_PORT=$port setsid npm start >"$work/start.log" 2>&1 &
stack_pid=$!
for _ in $(seq 1 240); do
  grep -q 'vmedia ready' "$work/start.log" && break
  kill -0 "$stack_pid" 2>/dev/null || { cat "$work/start.log"; echo "npm start exited early"; exit 1; }
  sleep 0.5
done
grep 'vmedia ready' "$work/start.log" || { cat "$work/start.log"; echo "no ready line"; exit 1; }
curl -sfk "https://127.0.0.1:$port/redfish/v1/" | head -c 300; echo

echo "== Ctrl-C"
kill -INT -- "-$stack_pid"
for _ in $(seq 1 40); do kill -0 "$stack_pid" 2>/dev/null || break; sleep 0.25; done
if pgrep -f "$work/vmedia" >/dev/null; then pgrep -af "$work/vmedia"; echo "stray processes"; exit 1; fi
stack_pid=
echo "stopped cleanly"

$start_only && exit 0
echo "== npm test ($($with_shared && echo 'with' || echo 'without') the DMTF bundle beside the clone)"
# The default bundle location is ../shared; make sure nothing else points the tests at one.
env -u VMEDIA_DMTF_SCHEMAS npm test
