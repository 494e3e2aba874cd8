#!/usr/bin/env bash
# Fetches the public client snapshots that test/clients/ runs against: webui-vue, Redfish-Tacklebox and
# python-redfish-library, each as a plain work tree at a pinned commit. They are never part of the
# repository; the tests read them from $VMEDIA_CLIENT_SNAPSHOTS (default /var/tmp/vmedia-clients) and
# skip, saying why, when a tree is missing.
#
# Idempotent: a tree already at its commit is left alone; a tree at another commit is replaced.
# Without network access, set VMEDIA_CLIENT_MIRRORS to a directory holding bare git directories
# <owner>+<name>/repo (for example openbmc+webui-vue/repo): the trees are then extracted from them
# with `git archive` instead of cloned.
set -euo pipefail

dest=${VMEDIA_CLIENT_SNAPSHOTS:-/var/tmp/vmedia-clients}
mirrors=${VMEDIA_CLIENT_MIRRORS:-}
# A tree extracted from a mirror has no .git; this file in it names its commit.
marker=.snapshot-commit

# "tree-name owner/name commit" per line, from the one list the tests read too.
pins=$(dirname "$0")/../test/clients/snapshots.json
mapfile -t snapshots < <(node -e '
  for (const [name, s] of Object.entries(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))))
    console.log(name, s.repository, s.commit);' "$pins")

# The commit a tree is at, or nothing when it is absent or unknown.
tree_commit() {
  local tree=$1
  if [[ -d "$tree/.git" ]]; then
    git -C "$tree" rev-parse HEAD 2>/dev/null || true
  elif [[ -f "$tree/$marker" ]]; then
    cat "$tree/$marker"
  fi
}

mkdir -p "$dest"
for entry in "${snapshots[@]}"; do
  read -r name repo commit <<<"$entry"
  tree="$dest/$name"
  if [[ "$(tree_commit "$tree")" == "$commit" ]]; then
    echo "$name: already at $commit"
    continue
  fi
  staging=$(mktemp -d "$dest/.$name.XXXXXX")
  trap 'rm -rf "$staging"' EXIT
  chmod 755 "$staging"
  if [[ -n "$mirrors" ]]; then
    gitdir="$mirrors/${repo/\//+}/repo"
    if ! git --git-dir="$gitdir" cat-file -e "$commit^{commit}" 2>/dev/null; then
      echo "fetch-client-snapshots: $gitdir has no commit $commit" >&2
      exit 1
    fi
    git --git-dir="$gitdir" archive "$commit" | tar -x -C "$staging"
    echo "$commit" >"$staging/$marker"
    echo "$name: extracted $commit from $gitdir"
  else
    git -C "$staging" init --quiet
    git -C "$staging" remote add origin "https://github.com/$repo"
    git -C "$staging" fetch --quiet --depth 1 origin "$commit"
    git -C "$staging" -c advice.detachedHead=false checkout --quiet --detach FETCH_HEAD
    echo "$name: cloned https://github.com/$repo at $commit"
  fi
  rm -rf "$tree"
  mv "$staging" "$tree"
  trap - EXIT
done
