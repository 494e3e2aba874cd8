import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);
const vmedia = path.resolve('bin/vmedia.js');

test('every command answers --help with its synopsis instead of an option error', async () => {
  const { stderr: list } = await run(process.execPath, [vmedia, '--help']);
  const names = [...list.matchAll(/^ {2}(\w+) {2,}/gm)].map((match) => match[1]!);
  assert.deepEqual(names, ['start', 'server', 'service', 'machine', 'mount', 'insert', 'eject', 'status']);
  for (const name of names) {
    const { stdout } = await run(process.execPath, [vmedia, name, '--help']);
    assert.match(stdout, new RegExp(`^usage: vmedia ${name} `));
  }
  const { stdout: mount } = await run(process.execPath, [vmedia, 'mount', '-h']);
  assert.match(mount, /<SlotId> <file> \[--rw\]/);
});

test('an unknown command lists the commands and exits 2', async () => {
  await assert.rejects(
    run(process.execPath, [vmedia, 'frobnicate']),
    (error: { code: number; stderr: string }) => {
      assert.equal(error.code, 2);
      assert.match(error.stderr, /^usage: vmedia <command>/);
      return true;
    },
  );
});
