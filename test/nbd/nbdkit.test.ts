/** Our NBD client against the real nbdkit (memory, file and pattern plugins) over Unix sockets. */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { NbdClient } from '../../src/nbd/client/client.ts';
import { NbdDisconnectedError, NbdRequestError } from '../../src/nbd/errors.ts';
import { viewOf } from '../../src/nbd/wire.ts';
import { connectUnix } from '../helpers/connect-unix.ts';
import { type Nbdkit, startNbdkit } from '../helpers/nbdkit.ts';
import { patternBytes, settle, sha256, tempDir } from './helpers.ts';

let dir: { dir: string; remove(): Promise<void> };
const stops: Array<() => Promise<void>> = [];

before(async () => {
  dir = await tempDir();
});

after(async () => {
  for (const stop of stops) await stop();
  await dir.remove();
});

/** nbdkit with `args`, on a socket of its own; stopped after the tests. */
async function startKit(args: string[]): Promise<Nbdkit> {
  const kit = await startNbdkit(dir.dir, `nbdkit-${stops.length}`, args);
  stops.push(kit.stop);
  return kit;
}

async function nbdkit(...args: string[]): Promise<string> {
  return (await startKit(args)).socket;
}

test('memory plugin: size, writes read back, flush, trim, FUA', async () => {
  const socket = await nbdkit('memory', '64M');
  const client = await NbdClient.connect(await connectUnix(socket));
  assert.equal(client.size, 64 * 1024 * 1024);
  assert.equal(client.readOnly, false);
  assert.ok(client.canFlush && client.canTrim && client.canFua);

  assert.deepEqual(await client.read(0, 4096), new Uint8Array(4096));
  const data = patternBytes(5 * 1024 * 1024 + 3, 11);
  await client.write(12345, data);
  await client.flush();
  assert.equal(sha256(await client.read(12345, data.length)), sha256(data));
  await client.write(0, new Uint8Array([1, 2, 3]), { fua: true });
  assert.deepEqual(await client.read(0, 4), new Uint8Array([1, 2, 3, 0]));

  // The memory plugin really discards trimmed pages: they read back as zeroes.
  await client.trim(1024 * 1024, 2 * 1024 * 1024);
  assert.deepEqual(await client.read(1024 * 1024, 2 * 1024 * 1024), new Uint8Array(2 * 1024 * 1024));
  assert.deepEqual(
    await client.read(3 * 1024 * 1024, 16),
    data.subarray(3 * 1024 * 1024 - 12345, 3 * 1024 * 1024 - 12345 + 16),
  );
  await client.close();
  assert.equal(await client.closed, undefined);
});

test('memory plugin: hundreds of requests in flight, replies matched by handle', async () => {
  // The delay filter makes every request slow, so they pile up in flight and complete out of order
  // across nbdkit's worker threads.
  const socket = await nbdkit(
    '--threads',
    '16',
    '--filter=delay',
    'memory',
    '16M',
    'rdelay=5ms',
    'wdelay=5ms',
  );
  const client = await NbdClient.connect(await connectUnix(socket), { maxInFlight: 64 });
  const count = 400;
  const started = Date.now();
  await Promise.all(
    Array.from({ length: count }, (_, i) => client.write(i * 8192, patternBytes(8192, i + 1))),
  );
  const reads = Array.from({ length: count }, (_, i) => client.read((count - 1 - i) * 8192, 8192));
  let peak = 0;
  const sampler = setInterval(() => {
    peak = Math.max(peak, client.inFlight);
  }, 1);
  const results = await Promise.all(reads);
  clearInterval(sampler);
  results.forEach((block, i) => {
    assert.deepEqual(block, patternBytes(8192, count - i));
  });
  // 800 requests of ≥ 5 ms each: done well under the 4 s they would take one at a time.
  assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
  assert.ok(peak >= 16, `only ${peak} requests in flight`);
  await client.close();
});

test('file plugin: byte-exact reads of a file, writes land in the file after flush', async () => {
  const file = path.join(dir.dir, 'disk.img');
  const content = patternBytes(4 * 1024 * 1024, 21);
  await fs.writeFile(file, content);
  const socket = await nbdkit('file', `file=${file}`);
  const client = await NbdClient.connect(await connectUnix(socket));
  assert.equal(client.size, content.length);
  assert.equal(sha256(await client.read(0, client.size)), sha256(content));
  const patch = patternBytes(70000, 22);
  await client.write(1_000_001, patch);
  await client.flush();
  const onDisk = await fs.readFile(file);
  assert.deepEqual(new Uint8Array(onDisk.subarray(1_000_001, 1_000_001 + patch.length)), patch);
  assert.equal(sha256(onDisk.subarray(0, 1_000_001)), sha256(content.subarray(0, 1_000_001)));
  await client.close();
});

test('file plugin read-only (-r): the flag is reported and writes are refused', async () => {
  const file = path.join(dir.dir, 'ro.img');
  await fs.writeFile(file, patternBytes(1024 * 1024, 5));
  const socket = await nbdkit('-r', 'file', `file=${file}`);
  const client = await NbdClient.connect(await connectUnix(socket));
  assert.equal(client.readOnly, true);
  await assert.rejects(
    client.write(0, new Uint8Array(1)),
    (e: Error) => e instanceof NbdRequestError && e.code === 'EPERM',
  );
  await client.close();
});

test('pattern plugin beyond 4 GiB: exact size and 64-bit offsets', async () => {
  // The pattern plugin stores each 8-byte word's own offset in it, big-endian: a mistake in the upper
  // 32 bits of an offset shows up as a wrong word.
  const size = 5 * 2 ** 30 + 512;
  const socket = await nbdkit('pattern', `size=${size}`);
  const client = await NbdClient.connect(await connectUnix(socket));
  assert.equal(client.size, 5368709632);
  assert.equal(client.readOnly, true);
  for (const offset of [0, 2 ** 32 - 8, 2 ** 32, 2 ** 32 + 4096, size - 4096]) {
    const block = await client.read(offset, 4096);
    const view = viewOf(block);
    for (let i = 0; i < 4096; i += 8) assert.equal(view.getBigUint64(i), BigInt(offset + i));
  }
  await assert.rejects(client.read(size - 8, 16), RangeError);
  await client.close();
});

test('block size constraints from nbdkit are honoured: large requests split, unaligned refused', async () => {
  const socket = await nbdkit(
    '--filter=blocksize-policy',
    'memory',
    '8M',
    'blocksize-minimum=512',
    'blocksize-preferred=4096',
    'blocksize-maximum=65536',
    'blocksize-error-policy=error',
  );
  const client = await NbdClient.connect(await connectUnix(socket));
  assert.deepEqual(client.blockSize, { minimum: 512, preferred: 4096, maximum: 65536 });
  const data = patternBytes(1024 * 1024, 9);
  await client.write(512, data); // 16 requests of 64 KiB each
  assert.equal(sha256(await client.read(512, data.length)), sha256(data));
  await assert.rejects(client.read(100, 512), /not aligned to 512/);
  await client.close();
});

test('nbdkit with an unknown export name: connect fails with the server’s reason', async () => {
  const socket = await nbdkit(
    '--filter=exportname',
    'memory',
    '1M',
    'exportname=disk',
    'exportname-list=explicit',
    'exportname-strict=true',
  );
  const ok = await NbdClient.connect(await connectUnix(socket), { exportName: 'disk' });
  assert.equal(ok.size, 1024 * 1024);
  await ok.close();
  await assert.rejects(
    NbdClient.connect(await connectUnix(socket), { exportName: 'other' }),
    /refused export 'other': NBD_REP_ERR_UNKNOWN/,
  );
  assert.deepEqual(await NbdClient.listExports(await connectUnix(socket)), ['disk']);
});

test('nbdkit shutting down answers ESHUTDOWN and the client disconnects by itself', async () => {
  const kit = await startKit(['--filter=delay', 'memory', '1M', 'rdelay=2000ms']);
  const client = await NbdClient.connect(await connectUnix(kit.socket));
  const reads = Array.from({ length: 4 }, (_, i) => client.read(i * 4096, 4096)).map(settle);
  await new Promise((resolve) => setTimeout(resolve, 100));
  await kit.stop('SIGTERM');
  for (const error of await Promise.all(reads)) {
    assert.ok(error instanceof NbdRequestError && error.code === 'ESHUTDOWN', String(error));
  }
  assert.equal(await client.closed, undefined);
  await assert.rejects(client.read(0, 1), NbdDisconnectedError);
});

test('nbdkit killed mid-request fails every outstanding request', async () => {
  const kit = await startKit(['--filter=delay', 'memory', '1M', 'rdelay=2000ms']);
  const client = await NbdClient.connect(await connectUnix(kit.socket));
  const reads = Array.from({ length: 4 }, (_, i) => client.read(i * 4096, 4096)).map(settle);
  await new Promise((resolve) => setTimeout(resolve, 100));
  await kit.stop('SIGKILL');
  for (const error of await Promise.all(reads)) {
    assert.match(String(error), /server closed the connection with 4 request\(s\) outstanding/);
  }
  assert.ok((await client.closed) instanceof NbdDisconnectedError);
});
