import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { openAsBlob } from 'node:fs';
import fs, { type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { NbdRequestError } from '../../src/nbd/errors.ts';
import { type ByteSource, FileDevice, OVERLAY_CHUNK } from '../../src/web/file-device.ts';

const GiB = 1024 ** 3;

/** Node's `fs.openAsBlob` gives the same `Blob` a browser gives for a chosen file. */
async function blobOf(file: string): Promise<Blob> {
  return (await openAsBlob(file)) as Blob;
}

/**
 * Node 20's `openAsBlob` reports sizes modulo 2^32, so images beyond 4 GiB are read through this
 * stand-in with the same `slice().arrayBuffer()` shape (Chromium's `File` is exercised by the E2E test).
 */
function fileSource(handle: FileHandle, size: number): ByteSource {
  return {
    size,
    slice: (start, end) => ({
      arrayBuffer: async () => {
        const buffer = Buffer.alloc(end - start);
        await handle.read(buffer, 0, buffer.length, start);
        return buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.length) as ArrayBuffer;
      },
    }),
  };
}

describe('FileDevice', () => {
  let dir: string;
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-file-device-'));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('a sparse image beyond 4 GiB: exact size, byte-exact reads past 2^32', async () => {
    const file = path.join(dir, 'big.img');
    const size = 6 * GiB + 4097; // not a multiple of anything the code might round to
    const marks = [
      { offset: 4 * GiB - 3, bytes: randomBytes(10) }, // straddles 2^32
      { offset: 5 * GiB + 123, bytes: randomBytes(4096) },
      { offset: size - 77, bytes: randomBytes(77) }, // the very end
    ];
    const handle = await fs.open(file, 'w+');
    await handle.truncate(size);
    for (const { offset, bytes } of marks) await handle.write(bytes, 0, bytes.length, offset);

    const device = new FileDevice(fileSource(handle, (await handle.stat()).size), { writable: true });
    try {
      assert.equal(device.size, size);
      for (const { offset, bytes } of marks) {
        assert.deepEqual(Buffer.from(await device.read(offset, bytes.length)), bytes);
      }
      assert.deepEqual(await device.read(size - 78, 1), new Uint8Array(1));
      // Overlay chunks past 2^32 land where they belong, including the short last chunk.
      const written = randomBytes(OVERLAY_CHUNK + 40);
      await device.write(size - written.length, written);
      await device.write(4 * GiB - 1, Buffer.from([1, 2]));
      assert.deepEqual(
        Buffer.from(await device.read(size - written.length - 1, written.length + 1)),
        Buffer.concat([Buffer.alloc(1), written]),
      );
      assert.deepEqual(
        Buffer.from(await device.read(4 * GiB - 3, 4)),
        Buffer.concat([marks[0]!.bytes.subarray(0, 2), Buffer.from([1, 2])]),
      );
    } finally {
      await handle.close();
    }
  });

  describe('read-write overlay', () => {
    let file: string;
    let original: Buffer;
    before(async () => {
      file = path.join(dir, 'small.img');
      original = randomBytes(5 * OVERLAY_CHUNK + 1000); // a short last chunk
      await fs.writeFile(file, original);
    });

    test('writes read back over the file, which stays unchanged', async () => {
      const device = new FileDevice(await blobOf(file), { writable: true });
      assert.equal(device.readOnly, false);
      assert.equal(new FileDevice(await blobOf(file)).readOnly, true);
      const expected = Buffer.from(original);
      const writes = [
        { offset: 100, bytes: randomBytes(10) }, // inside one chunk
        { offset: OVERLAY_CHUNK - 5, bytes: randomBytes(2 * OVERLAY_CHUNK + 10) }, // spans three chunks
        { offset: 4 * OVERLAY_CHUNK, bytes: randomBytes(OVERLAY_CHUNK) }, // exactly one chunk
        { offset: original.length - 3, bytes: randomBytes(3) }, // the end of the short last chunk
      ];
      for (const { offset, bytes } of writes) {
        await device.write(offset, bytes);
        bytes.copy(expected, offset);
      }
      assert.deepEqual(Buffer.from(await device.read(0, original.length)), expected);
      assert.deepEqual(
        Buffer.from(await device.read(OVERLAY_CHUNK + 7, 999)),
        expected.subarray(OVERLAY_CHUNK + 7, OVERLAY_CHUNK + 1006),
      );
      assert.deepEqual(await fs.readFile(file), original);
      // Only the touched chunks take memory: 0..3 and the short last one.
      assert.equal(device.overlaySize, 5 * OVERLAY_CHUNK + 1000);
    });

    test('concurrent partial writes to one chunk all survive', async () => {
      const device = new FileDevice(await blobOf(file), { writable: true });
      const expected = Buffer.from(original);
      const writes = Array.from({ length: 32 }, (_, i) => ({
        offset: 2 * OVERLAY_CHUNK + i * 100,
        bytes: randomBytes(50),
      }));
      await Promise.all(writes.map(({ offset, bytes }) => device.write(offset, bytes)));
      for (const { offset, bytes } of writes) bytes.copy(expected, offset);
      assert.deepEqual(Buffer.from(await device.read(0, original.length)), expected);
    });

    test('many reads in flight at once return their own ranges', async () => {
      const device = new FileDevice(await blobOf(file));
      const ranges = Array.from({ length: 64 }, (_, i) => ({ offset: i * 4999, length: 1 + i * 97 }));
      const results = await Promise.all(ranges.map(({ offset, length }) => device.read(offset, length)));
      ranges.forEach(({ offset, length }, i) => {
        assert.deepEqual(Buffer.from(results[i]!), original.subarray(offset, offset + length));
      });
    });

    test('a full overlay refuses further writes with ENOSPC and keeps what it has', async () => {
      const device = new FileDevice(await blobOf(file), {
        writable: true,
        maxOverlayBytes: 2 * OVERLAY_CHUNK,
      });
      await device.write(0, randomBytes(2 * OVERLAY_CHUNK));
      await assert.rejects(device.write(3 * OVERLAY_CHUNK, randomBytes(1)), (error: unknown) => {
        return error instanceof NbdRequestError && error.code === 'ENOSPC';
      });
      assert.equal(device.overlaySize, 2 * OVERLAY_CHUNK);
      assert.deepEqual(
        Buffer.from(await device.read(3 * OVERLAY_CHUNK, 10)),
        original.subarray(3 * OVERLAY_CHUNK, 3 * OVERLAY_CHUNK + 10),
      );
    });
  });
});
