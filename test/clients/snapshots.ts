import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import pins from './snapshots.json' with { type: 'json' };

/**
 * Public clients that are not Debian packages run from snapshots that are never part of the repository:
 * plain work trees under `VMEDIA_CLIENT_SNAPSHOTS` (default /var/tmp/vmedia-clients), filled by
 * scripts/fetch-client-snapshots.sh at the commits snapshots.json pins (the script reads them there too). Without a tree, its test group is skipped with
 * one line saying why.
 */
export const clientSnapshots = path.resolve(process.env.VMEDIA_CLIENT_SNAPSHOTS ?? '/var/tmp/vmedia-clients');

/** Each snapshot: its GitHub repository, the pinned commit, and a file the tests need from it. */
export const snapshots = pins;

export type SnapshotName = keyof typeof snapshots;

/** A path inside a snapshot's work tree. */
export function snapshotPath(name: SnapshotName, ...parts: string[]): string {
  return path.join(clientSnapshots, name, ...parts);
}

/** The commit a tree is at: a clone's detached HEAD, or the marker the script writes into an extracted tree. */
function treeCommit(tree: string): string | undefined {
  for (const file of [path.join(tree, '.git', 'HEAD'), path.join(tree, '.snapshot-commit')]) {
    if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  }
  return undefined;
}

/** Why the snapshot `name` cannot be used here, or undefined when its tree is present at the pinned commit. */
export function snapshotMissing(name: SnapshotName): string | undefined {
  const { commit, needs } = snapshots[name];
  const tree = snapshotPath(name);
  const fetch = 'run scripts/fetch-client-snapshots.sh, or set VMEDIA_CLIENT_SNAPSHOTS';
  if (!existsSync(path.join(tree, needs))) return `the ${name} snapshot is not at ${tree} (${fetch})`;
  const at = treeCommit(tree);
  if (at !== commit)
    return `the ${name} snapshot at ${tree} is at ${at ?? 'an unknown commit'}, not ${commit} (${fetch})`;
  return undefined;
}
