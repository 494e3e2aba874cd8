import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { LocalFileDevice } from '../../src/cli/file-device.ts';

let dir: string;
let file: string;
const content = randomBytes(3 * 1024 * 1024 + 123);

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-file-device-'));
  file = path.join(dir, 'image.img');
  await fs.writeFile(file, content);
});

after(() => fs.rm(dir, { recursive: true, force: true }));

/** Whether `read` settled before the event loop got round to its check phase (a setImmediate). */
async function settlesWithoutTheLoop(read: () => Promise<Uint8Array>): Promise<boolean> {
  let loopTurned = false;
  setImmediate(() => {
    loopTurned = true;
  });
  await read();
  return !loopTurned;
}

test('reads return the file bytes at their offsets, small and large, up to its last byte', async () => {
  const device = await LocalFileDevice.open(file, false);
  try {
    assert.equal(device.size, content.length);
    assert.equal(device.readOnly, true);
    for (const [offset, length] of [
      [0, 4096],
      [12_345, 65_536],
      [1_000_000, 2 * 1024 * 1024],
      [content.length - 123, 123],
    ] as const) {
      assert.deepEqual(
        Buffer.from(await device.read(offset, length)),
        content.subarray(offset, offset + length),
      );
    }
  } finally {
    await device.close();
  }
});

test('a small read is made at once, a large one through the thread pool, off the event loop', async () => {
  const device = await LocalFileDevice.open(file, false);
  try {
    assert.equal(await settlesWithoutTheLoop(() => device.read(8192, 4096)), true);
    assert.equal(await settlesWithoutTheLoop(() => device.read(0, 1024 * 1024)), false);
  } finally {
    await device.close();
  }
});
