/**
 * Small pieces of the NBD module: 64-bit conversions, the in-memory device and pipe, and that what the
 * browser bundles (the NBD core, the wire contracts, the browser transport) uses no Node API.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { checkBlockDevice } from '../../src/nbd/block-device.ts';
import { errnoOf } from '../../src/nbd/errors.ts';
import { describeBytes, setU64, toU64, u64ToSafeNumber } from '../../src/nbd/wire.ts';
import { createConnectionPair, MemoryBlockDevice } from '../helpers/nbd-memory.ts';

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
      assert.equal(u64ToSafeNumber(view.getBigUint64(0)), value);
      assert.equal(view.getBigUint64(0), BigInt(value));
    }
    // 5 GiB + 512 on the wire: high word 1, low word 0x40000200.
    setU64(view, 0, 5 * 2 ** 30 + 512);
    assert.deepEqual([view.getUint32(0), view.getUint32(4)], [1, 0x40000200]);
  });

  test('values beyond 2^53 - 1 are refused, not rounded', () => {
    assert.equal(u64ToSafeNumber(2n ** 53n), undefined);
    assert.equal(u64ToSafeNumber(2n ** 64n - 1n), undefined);
    assert.throws(() => setU64(new DataView(new ArrayBuffer(8)), 0, 2 ** 53), RangeError);
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

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The `.ts` files under `dir`, recursively, as paths relative to the repository root. */
async function sources(dir: string): Promise<string[]> {
  const entries = await fs.readdir(path.join(root, dir), { recursive: true });
  return entries.filter((f) => f.endsWith('.ts')).map((f) => path.join(dir, f));
}

test('what the browser bundles uses no Node-specific API: src/nbd, src/contract, the browser transport', async () => {
  const nodeFree = [
    ...(await sources('src/nbd')),
    ...(await sources('src/contract')),
    'src/transport/browser-websocket-connection.ts',
  ];
  for (const expected of [
    'src/nbd/protocol.ts',
    'src/nbd/server/handshake.ts',
    'src/nbd/client/transmission.ts',
    'src/contract/bridge.ts',
  ]) {
    assert.ok(nodeFree.includes(expected), `${expected} is not checked`);
  }
  const allowed = new Set(nodeFree);
  for (const file of nodeFree) {
    // Comments may name Node APIs ("no Buffer"): only code counts.
    const source = (await fs.readFile(path.join(root, file), 'utf8'))
      .replace(/\/\*[\s\S]*?\*\//g, '')
      .replace(/(^|[^:])\/\/.*$/gm, '$1');
    assert.doesNotMatch(
      source,
      /from ['"]node:|require\(|\bBuffer\b|\bprocess\.[a-z]/,
      `${file} uses a Node API`,
    );
    // Every import is relative and stays inside the Node-free set, so the check covers what they pull in.
    for (const [, specifier] of source.matchAll(/(?:from|import)\s+['"]([^'"]+)['"]/g)) {
      assert.ok(specifier!.startsWith('.'), `${file} imports the package ${specifier}`);
      const target = path.join(path.dirname(file), specifier!);
      assert.ok(allowed.has(target), `${file} imports ${target}, which is not Node-free`);
    }
  }
});
