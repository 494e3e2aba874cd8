/** Small pieces of the NBD module: 64-bit conversions, the in-memory device and pipe, module purity. */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { checkBlockDevice } from '../../src/nbd/block-device.ts';
import { createConnectionPair, MemoryBlockDevice } from '../../src/nbd/memory.ts';
import { errnoOf } from '../../src/nbd/server.ts';
import { describeBytes, getU64, setU64, toU64, u64ToSafeNumber } from '../../src/nbd/wire.ts';

describe('64-bit values', () => {
  test('round-trip exactly around 2^32 and up to 2^53 - 1', () => {
    const bytes = new Uint8Array(8);
    const view = new DataView(bytes.buffer);
    for (const value of [
      0,
      1,
      2 ** 32 - 1,
      2 ** 32,
      2 ** 32 + 1,
      5 * 2 ** 30 + 512,
      Number.MAX_SAFE_INTEGER,
    ]) {
      setU64(view, 0, value);
      assert.equal(getU64(view, 0, 'size'), value);
      assert.equal(view.getBigUint64(0), BigInt(value));
    }
    // 5 GiB + 512 on the wire: high word 1, low word 0x40000200.
    setU64(view, 0, 5 * 2 ** 30 + 512);
    assert.deepEqual([view.getUint32(0), view.getUint32(4)], [1, 0x40000200]);
  });

  test('values beyond 2^53 - 1 are refused, not rounded', () => {
    assert.equal(u64ToSafeNumber(2n ** 53n), undefined);
    assert.equal(u64ToSafeNumber(2n ** 64n - 1n), undefined);
    const view = new DataView(new ArrayBuffer(8));
    view.setBigUint64(0, 2n ** 53n + 1n);
    assert.throws(
      () => getU64(view, 0, 'export size'),
      /export size 9007199254740993 is larger than 2\^53 - 1/,
    );
    assert.throws(() => toU64(-1), RangeError);
    assert.throws(() => toU64(1.5), RangeError);
    assert.throws(() => toU64(2 ** 53), RangeError);
  });

  test('describeBytes shows hex and printable text', () => {
    assert.equal(describeBytes(new TextEncoder().encode('HTTP/1.1')), '0x485454502f312e31 ("HTTP/1.1")');
  });
});

describe('MemoryBlockDevice', () => {
  test('is sparse, reads holes as zeroes, trims', async () => {
    const device = new MemoryBlockDevice(2 ** 40);
    assert.equal(device.allocatedBytes, 0);
    await device.write(2 ** 40 - 3, new Uint8Array([7, 8, 9]));
    assert.deepEqual(await device.read(2 ** 40 - 5, 5), new Uint8Array([0, 0, 7, 8, 9]));
    assert.equal(device.allocatedBytes, 64 * 1024);
    await device.trim(0, 2 ** 40);
    assert.equal(device.allocatedBytes, 0);
    await assert.rejects(device.read(2 ** 40 - 1, 2), RangeError);
  });

  test('read-only devices refuse writes with EROFS (EPERM on the wire)', async () => {
    const device = new MemoryBlockDevice(4096, { readOnly: true, data: new Uint8Array([1, 2]) });
    assert.deepEqual(await device.read(0, 3), new Uint8Array([1, 2, 0]));
    await assert.rejects(device.write(0, new Uint8Array(1)), (error: unknown) => errnoOf(error) === 1);
  });
});

test('checkBlockDevice names what is wrong', () => {
  const read = async () => new Uint8Array();
  assert.throws(() => checkBlockDevice({ size: 2 ** 53, readOnly: true, read }), /size/);
  assert.throws(() => checkBlockDevice({ size: -1, readOnly: true, read }), /size/);
  assert.throws(() => checkBlockDevice({ size: 1, readOnly: false, read }), /write\(\)/);
  assert.throws(
    () =>
      checkBlockDevice({
        size: 1,
        readOnly: true,
        read,
        blockSize: { minimum: 3, preferred: 512, maximum: 512 },
      }),
    /minimum/,
  );
  checkBlockDevice({ size: Number.MAX_SAFE_INTEGER, readOnly: true, read });
});

test('errnoOf maps backend errors to NBD error values', () => {
  assert.equal(errnoOf(new Error('x')), 5);
  assert.equal(errnoOf(Object.assign(new Error('x'), { code: 'ENOSPC' })), 28);
  assert.equal(errnoOf(Object.assign(new Error('x'), { code: 'EACCES' })), 1);
  assert.equal(errnoOf('not even an error'), 5);
});

test('the in-memory connection pair applies backpressure and ends cleanly', async () => {
  const [a, b] = createConnectionPair({ highWaterMark: 10 });
  let written = false;
  const writing = a.write(new Uint8Array(20)).then(() => {
    written = true;
  });
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(written, false);
  assert.equal((await b.read())?.length, 20);
  await writing;
  await a.write(new Uint8Array([1]));
  a.close();
  assert.deepEqual(await b.read(), new Uint8Array([1]));
  assert.equal(await b.read(), null);
  await assert.rejects(b.write(new Uint8Array(1)));
});

test('the protocol core uses no Node-specific API (the browser reuses it)', async () => {
  const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/nbd');
  const files = (await fs.readdir(dir)).filter((f) => f.endsWith('.ts') && f !== 'node-connection.ts');
  assert.ok(files.includes('server.ts') && files.includes('client.ts'));
  for (const file of files) {
    const source = await fs.readFile(path.join(dir, file), 'utf8');
    assert.doesNotMatch(
      source,
      /from ['"]node:|require\(|\bBuffer\b|\bprocess\.[a-z]/,
      `${file} uses a Node API`,
    );
    assert.doesNotMatch(source, /from ['"](?!\.\/)/, `${file} imports something outside src/nbd`);
  }
});
