/** Our client against our server: over an in-memory pipe and over a real Unix socket. */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { NbdClient } from '../../src/nbd/client/client.ts';
import { CMD_DISC, CMD_READ, OPT_GO, REP_ACK } from '../../src/nbd/constants.ts';
import { serveNbd } from '../../src/nbd/server/serve.ts';
import { connectUnix } from '../helpers/connect-unix.ts';
import { createConnectionPair, MemoryBlockDevice } from '../helpers/nbd-memory.ts';
import {
  goData,
  listenNbd,
  type NbdTestServer,
  patternBytes,
  RawPeer,
  ReverseOrderDevice,
  settle,
  sha256,
  tempDir,
} from './helpers.ts';

const GiB = 2 ** 30;
const BIG = 5 * GiB + 512;

describe('client ↔ server over a Unix socket', () => {
  let dir: { dir: string; remove(): Promise<void> };
  let server: NbdTestServer;
  const image = patternBytes(8 * 1024 * 1024, 7);
  const devices = {
    '': new MemoryBlockDevice(image.length, { data: image, readOnly: true }),
    rw: new MemoryBlockDevice(16 * 1024 * 1024),
    big: new MemoryBlockDevice(BIG),
  };
  const tail = patternBytes(4096, 99);

  before(async () => {
    dir = await tempDir();
    devices.big.store(BIG - tail.length, tail);
    server = await listenNbd(dir.dir, (name) => devices[name as keyof typeof devices], {
      listExports: () => Object.keys(devices),
    });
  });

  after(async () => {
    await server.close();
    await dir.remove();
  });

  test('lists exports', async () => {
    assert.deepEqual(await NbdClient.listExports(await connectUnix(server.socket)), ['', 'rw', 'big']);
  });

  test('reads the default export byte-exact, in one request and split ones', async () => {
    const client = await NbdClient.connect(await connectUnix(server.socket));
    assert.equal(client.size, image.length);
    assert.equal(client.readOnly, true);
    assert.deepEqual(client.blockSize, { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 });
    assert.equal(sha256(await client.read(0, image.length)), sha256(image));
    assert.deepEqual(await client.read(12345, 678), image.subarray(12345, 12345 + 678));
    await client.close();
  });

  test('a >4 GiB sparse export: exact size, zero holes, byte-exact tail', async () => {
    const client = await NbdClient.connect(await connectUnix(server.socket), { exportName: 'big' });
    assert.equal(client.size, 5368709632);
    assert.deepEqual(await client.read(BIG - tail.length, tail.length), tail);
    assert.deepEqual(await client.read(4 * GiB - 256, 512), new Uint8Array(512));
    // Offsets that differ only above bit 32 must not alias each other.
    await client.write(2 ** 32 + 100, new Uint8Array([0xaa]));
    assert.deepEqual(await client.read(100, 1), new Uint8Array([0]));
    assert.deepEqual(await client.read(2 ** 32 + 100, 1), new Uint8Array([0xaa]));
    assert.equal(devices.big.peek(2 ** 32 + 100, 1)[0], 0xaa);
    await client.close();
  });

  test('writes, FUA, flush and trim round-trip', async () => {
    const client = await NbdClient.connect(await connectUnix(server.socket), { exportName: 'rw' });
    assert.equal(client.readOnly, false);
    assert.ok(client.canFlush && client.canFua && client.canTrim);
    const data = patternBytes(3 * 1024 * 1024 + 17, 3);
    await client.write(1000, data, { fua: true });
    await client.flush();
    assert.equal(sha256(await client.read(1000, data.length)), sha256(data));
    await client.trim(0, 1024 * 1024);
    assert.deepEqual(await client.read(0, 64), new Uint8Array(64));
    assert.deepEqual(devices.rw.peek(1024 * 1024, 16), data.subarray(1024 * 1024 - 1000, 1024 * 1024 - 984));
    await client.close();
  });

  test('many requests in flight, pipelined', async () => {
    const client = await NbdClient.connect(await connectUnix(server.socket), {
      exportName: 'rw',
      maxInFlight: 64,
    });
    const blocks = 512;
    const writes: Promise<void>[] = [];
    for (let i = 0; i < blocks; i++) writes.push(client.write(i * 4096, patternBytes(4096, i + 1)));
    let peak = 0;
    const reads: Promise<Uint8Array>[] = [];
    await Promise.all(writes);
    for (let i = blocks - 1; i >= 0; i--) reads.push(client.read(i * 4096, 4096));
    const sampler = setInterval(() => {
      peak = Math.max(peak, client.inFlight);
    }, 0);
    const results = await Promise.all(reads);
    clearInterval(sampler);
    results.forEach((block, k) => {
      assert.deepEqual(block, patternBytes(4096, blocks - k));
    });
    assert.ok(peak > 16, `only ${peak} requests were in flight at once`);
    await client.close();
  });
});

test('reads completing in reverse order reach a pipelining client intact', async () => {
  const image = patternBytes(1024 * 1024, 5);
  const device = new ReverseOrderDevice(new MemoryBlockDevice(image.length, { data: image }), 8);
  const [serverEnd, clientEnd] = createConnectionPair();
  const served = serveNbd(serverEnd, () => device, { maxInFlight: 8 });
  const client = await NbdClient.connect(clientEnd);
  const offsets = Array.from({ length: 64 }, (_, i) => ((i * 37) % 64) * 16384);
  const results = await Promise.all(offsets.map((offset) => client.read(offset, 16384)));
  results.forEach((data, i) => {
    assert.deepEqual(data, image.subarray(offsets[i], offsets[i]! + 16384));
  });
  assert.ok(device.reorderedPairs >= 32, `only ${device.reorderedPairs} reads completed out of order`);
  await client.close();
  await served;
});

test('the server keeps memory bounded when the client does not read its replies', async () => {
  let reads = 0;
  const device = new MemoryBlockDevice(64 * 1024 * 1024);
  const counting = {
    size: device.size,
    readOnly: true,
    read(offset: number, length: number) {
      reads++;
      return device.read(offset, length);
    },
  };
  const [serverEnd, clientEnd] = createConnectionPair({ highWaterMark: 64 * 1024 });
  const served = serveNbd(serverEnd, () => counting, { maxInFlight: 8, maxBufferedBytes: 3 * 1024 * 1024 });
  const peer = new RawPeer(clientEnd);
  await peer.greet();
  await peer.sendOption(OPT_GO, goData(''));
  while ((await peer.optionReply()).type !== REP_ACK);
  // 64 reads of 1 MiB, and nobody reads the replies: the server may hold at most 3 MiB of them.
  const sending = (async () => {
    for (let i = 0; i < 64; i++) await peer.sendRequest(CMD_READ, i * 1024 * 1024, 1024 * 1024, BigInt(i));
  })();
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(reads, 3);
  // Reading the replies lets everything through.
  for (let i = 0; i < 64; i++) {
    assert.equal((await peer.simpleReply()).error, 0);
    await peer.take(1024 * 1024);
  }
  await sending;
  assert.equal(reads, 64);
  await peer.sendRequest(CMD_DISC, 0, 0, 0n);
  await served;
});

test('a client vanishing with requests in flight ends the session without hanging', async () => {
  const dir = await tempDir();
  let release!: () => void;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let finished = 0;
  const device = {
    size: 1024 * 1024,
    readOnly: true,
    async read(_offset: number, length: number) {
      await gate;
      finished++;
      return new Uint8Array(length);
    },
  };
  const server = await listenNbd(dir.dir, () => device);
  try {
    const connection = await connectUnix(server.socket);
    const client = await NbdClient.connect(connection);
    const reads = Array.from({ length: 8 }, (_, i) => client.read(i * 4096, 4096)).map(settle);
    await new Promise((resolve) => setTimeout(resolve, 50));
    connection.close(); // the transport goes away under the client
    for (const error of await Promise.all(reads)) assert.ok(error instanceof Error);
    release();
    // The session settles once the backend calls it started have finished, and they all did.
    const [outcome] = await Promise.all(server.outcomes);
    assert.equal(outcome, undefined);
    assert.equal(finished, 8);
  } finally {
    await server.close();
    await dir.remove();
  }
});
