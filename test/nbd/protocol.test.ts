/**
 * The server's handshake and transmission rules, checked byte by byte with a raw peer, and the client's
 * behaviour against servers that send garbage or vanish.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { BlockDevice } from '../../src/nbd/block-device.ts';
import { NbdClient } from '../../src/nbd/client/client.ts';
import * as C from '../../src/nbd/constants.ts';
import {
  NbdDisconnectedError,
  NbdOptionError,
  NbdProtocolError,
  NbdRequestError,
} from '../../src/nbd/errors.ts';
import { MAX_OPTIONS } from '../../src/nbd/server/handshake.ts';
import { type ServeNbdOptions, serveNbd } from '../../src/nbd/server/serve.ts';
import { viewOf } from '../../src/nbd/wire.ts';
import { connectUnix } from '../helpers/connect-unix.ts';
import { createConnectionPair, MemoryBlockDevice } from '../helpers/nbd-memory.ts';
import { goData, listenNbd, RawPeer, settle, tempDir, u32 } from './helpers.ts';

const SIZE = 1024 * 1024;

function exports(): Record<string, BlockDevice> {
  const data = new Uint8Array(SIZE);
  for (let i = 0; i < SIZE; i++) data[i] = (i * 7) & 0xff;
  return {
    '': new MemoryBlockDevice(SIZE, { data, readOnly: true }),
    rw: new MemoryBlockDevice(SIZE),
  };
}

/** Our server on one end of an in-memory pipe, a raw peer on the other. */
function session(
  devices: Record<string, BlockDevice> = exports(),
  options: ServeNbdOptions = { listExports: () => Object.keys(devices) },
): { peer: RawPeer; done: Promise<unknown>; devices: Record<string, BlockDevice> } {
  const [serverEnd, clientEnd] = createConnectionPair();
  const done = serveNbd(serverEnd, (name) => devices[name], options).then(
    () => 'resolved',
    (error: unknown) => error,
  );
  return { peer: new RawPeer(clientEnd), done, devices };
}

/** A session that has negotiated `name` with NBD_OPT_GO; returns the transmission flags. */
async function transmission(name = '', devices?: Record<string, BlockDevice>, options?: ServeNbdOptions) {
  const s = session(devices, options);
  await s.peer.greet();
  await s.peer.sendOption(C.OPT_GO, goData(name));
  let flags = -1;
  for (;;) {
    const reply = await s.peer.optionReply();
    if (reply.type === C.REP_INFO && viewOf(reply.data).getUint16(0) === C.INFO_EXPORT) {
      flags = viewOf(reply.data).getUint16(10);
    }
    if (reply.type === C.REP_ACK) break;
    assert.equal(reply.type, C.REP_INFO);
  }
  return { ...s, flags };
}

describe('server handshake', () => {
  test('greets with NBDMAGIC, IHAVEOPT and FIXED_NEWSTYLE|NO_ZEROES', async () => {
    const { peer, done } = session();
    const hello = await peer.greet();
    assert.equal(hello.magic, 0x4e42444d41474943n);
    assert.equal(hello.opt, 0x49484156454f5054n);
    assert.equal(hello.flags, C.FLAG_FIXED_NEWSTYLE | C.FLAG_NO_ZEROES);
    peer.connection.close();
    assert.equal(await done, 'resolved');
  });

  test('an unknown option gets NBD_REP_ERR_UNSUP and negotiation continues', async () => {
    const { peer, done } = session();
    await peer.greet();
    for (const option of [999, C.OPT_STRUCTURED_REPLY, C.OPT_STARTTLS, C.OPT_SET_META_CONTEXT]) {
      await peer.sendOption(option, new Uint8Array(5).fill(0x41));
      const reply = await peer.optionReply();
      assert.equal(reply.magic, 0x3e889045565a9n);
      assert.equal(reply.option, option);
      assert.equal(reply.type, C.REP_ERR_UNSUP);
    }
    await peer.sendOption(C.OPT_GO, goData(''));
    const info = await peer.optionReply();
    assert.equal(info.type, C.REP_INFO);
    peer.connection.close();
    assert.equal(await done, 'resolved');
  });

  test('NBD_OPT_LIST lists the exports', async () => {
    const { peer, done } = session();
    await peer.greet();
    await peer.sendOption(C.OPT_LIST);
    const names: string[] = [];
    for (;;) {
      const reply = await peer.optionReply();
      if (reply.type === C.REP_ACK) break;
      assert.equal(reply.type, C.REP_SERVER);
      const length = viewOf(reply.data).getUint32(0);
      names.push(new TextDecoder().decode(reply.data.subarray(4, 4 + length)));
    }
    assert.deepEqual(names, ['', 'rw']);
    // With data it is invalid, and negotiation still continues.
    await peer.sendOption(C.OPT_LIST, new Uint8Array(3));
    assert.equal((await peer.optionReply()).type, C.REP_ERR_INVALID);
    await peer.sendOption(C.OPT_ABORT);
    assert.equal((await peer.optionReply()).type, C.REP_ACK);
    assert.equal(await peer.atEnd(), true);
    assert.equal(await done, 'resolved');
  });

  test('NBD_OPT_LIST without a lister is refused by policy', async () => {
    const { peer, done } = session(exports(), {});
    await peer.greet();
    await peer.sendOption(C.OPT_LIST);
    assert.equal((await peer.optionReply()).type, C.REP_ERR_POLICY);
    peer.connection.close();
    assert.equal(await done, 'resolved');
  });

  test('NBD_OPT_INFO reports export and block size; unknown exports get NBD_REP_ERR_UNKNOWN', async () => {
    const big = new MemoryBlockDevice(5 * 2 ** 30 + 512, {
      blockSize: { minimum: 512, preferred: 4096, maximum: 1024 * 1024 },
    });
    const { peer, done } = session({ big });
    await peer.greet();
    await peer.sendOption(C.OPT_INFO, goData('nope', [C.INFO_BLOCK_SIZE]));
    const unknown = await peer.optionReply();
    assert.equal(unknown.type, C.REP_ERR_UNKNOWN);
    assert.match(new TextDecoder().decode(unknown.data), /nope/);

    await peer.sendOption(C.OPT_INFO, goData('big', [C.INFO_BLOCK_SIZE, C.INFO_NAME]));
    const infos = new Map<number, DataView>();
    for (;;) {
      const reply = await peer.optionReply();
      assert.equal(reply.option, C.OPT_INFO);
      if (reply.type === C.REP_ACK) break;
      assert.equal(reply.type, C.REP_INFO);
      infos.set(viewOf(reply.data).getUint16(0), viewOf(reply.data));
    }
    const exp = infos.get(C.INFO_EXPORT)!;
    assert.equal(exp.byteLength, 12);
    assert.equal(exp.getBigUint64(2), 5368709632n);
    assert.equal(
      exp.getUint16(10),
      C.FLAG_HAS_FLAGS | C.FLAG_SEND_FLUSH | C.FLAG_SEND_FUA | C.FLAG_SEND_TRIM,
    );
    const bs = infos.get(C.INFO_BLOCK_SIZE)!;
    assert.deepEqual([bs.getUint32(2), bs.getUint32(6), bs.getUint32(10)], [512, 4096, 1024 * 1024]);
    assert.ok(infos.has(C.INFO_NAME));

    // INFO does not end negotiation: GO does, and then transmission works.
    await peer.sendOption(C.OPT_GO, goData('big'));
    while ((await peer.optionReply()).type !== C.REP_ACK);
    await peer.sendRequest(C.CMD_READ, 5 * 2 ** 30, 512, 7n);
    const reply = await peer.simpleReply();
    assert.deepEqual(reply, { magic: C.SIMPLE_REPLY_MAGIC, error: 0, handle: 7n });
    assert.deepEqual(await peer.take(512), new Uint8Array(512));
    await peer.sendRequest(C.CMD_DISC, 0, 0, 8n);
    assert.equal(await peer.atEnd(), true);
    assert.equal(await done, 'resolved');
  });

  test('malformed NBD_OPT_GO data is NBD_REP_ERR_INVALID', async () => {
    const { peer, done } = session();
    await peer.greet();
    const data = goData('', [C.INFO_BLOCK_SIZE]);
    await peer.sendOption(C.OPT_GO, data.subarray(0, data.length - 1));
    assert.equal((await peer.optionReply()).type, C.REP_ERR_INVALID);
    await peer.sendOption(C.OPT_GO, u32(100));
    assert.equal((await peer.optionReply()).type, C.REP_ERR_INVALID);
    peer.connection.close();
    assert.equal(await done, 'resolved');
  });

  test('NBD_OPT_EXPORT_NAME with and without NO_ZEROES', async () => {
    for (const [clientFlags, replyLength] of [
      [C.FLAG_C_FIXED_NEWSTYLE | C.FLAG_C_NO_ZEROES, 10],
      [C.FLAG_C_FIXED_NEWSTYLE, 134],
      [0, 134],
    ] as const) {
      const { peer, done } = session();
      await peer.greet(clientFlags);
      await peer.sendOption(C.OPT_EXPORT_NAME, new TextEncoder().encode('rw'));
      const reply = await peer.take(replyLength);
      const view = viewOf(reply);
      assert.equal(view.getBigUint64(0), BigInt(SIZE));
      assert.equal(view.getUint16(8) & C.FLAG_READ_ONLY, 0);
      assert.ok(reply.subarray(10).every((b) => b === 0));
      // The very next bytes are a transmission reply: no stray padding.
      await peer.sendRequest(C.CMD_FLUSH, 0, 0, 1n);
      assert.deepEqual(await peer.simpleReply(), { magic: C.SIMPLE_REPLY_MAGIC, error: 0, handle: 1n });
      await peer.sendRequest(C.CMD_DISC, 0, 0, 2n);
      assert.equal(await done, 'resolved');
    }
  });

  test('NBD_OPT_EXPORT_NAME for an unknown export ends the session', async () => {
    const { peer, done } = session();
    await peer.greet();
    await peer.sendOption(C.OPT_EXPORT_NAME, new TextEncoder().encode('missing'));
    assert.equal(await peer.atEnd(), true);
    const error = await done;
    assert.ok(error instanceof Error);
    assert.match(error.message, /unknown export 'missing'/);
  });

  test('unknown client flags are refused', async () => {
    const { peer, done } = session();
    await peer.greet(0x80);
    assert.equal(await peer.atEnd(), true);
    assert.ok((await done) instanceof NbdProtocolError);
  });

  test('garbage instead of an option closes the connection', async () => {
    const { peer, done } = session();
    await peer.take(18);
    await peer.send(new TextEncoder().encode('GET / HTTP/1.1\r\nHost: bmc\r\n\r\n'));
    assert.equal(await peer.atEnd(), true);
    const error = await done;
    assert.ok(error instanceof NbdProtocolError, String(error));
  });

  test('bad option magic after valid flags closes the connection', async () => {
    const { peer, done } = session();
    await peer.greet();
    await peer.send(new Uint8Array(16).fill(0xff));
    assert.equal(await peer.atEnd(), true);
    const error = await done;
    assert.ok(error instanceof NbdProtocolError);
    assert.match(error.message, /IHAVEOPT/);
  });

  test('oversized option data is skipped, not buffered, and negotiation continues', async () => {
    const { peer, done } = session();
    await peer.greet();
    await peer.sendOption(C.OPT_GO, new Uint8Array(1024 * 1024));
    assert.equal((await peer.optionReply()).type, C.REP_ERR_TOO_BIG);
    await peer.sendOption(C.OPT_ABORT);
    assert.equal((await peer.optionReply()).type, C.REP_ACK);
    assert.equal(await done, 'resolved');
  });

  test(`at most ${MAX_OPTIONS} options per handshake: a raw socket peer sending 33 is cut off`, async () => {
    assert.equal(MAX_OPTIONS, 32); // as nbdkit's MAX_NR_OPTIONS
    const dir = await tempDir();
    const device = new MemoryBlockDevice(4096);
    const server = await listenNbd(dir.dir, (name) => (name === '' ? device : undefined));
    try {
      // 31 options the server does not support, then NBD_OPT_GO: 32, the most it answers, and the
      // session goes on into transmission.
      const within = new RawPeer(await connectUnix(server.socket));
      await within.greet();
      for (let i = 1; i < MAX_OPTIONS; i++) await within.sendOption(C.OPT_STRUCTURED_REPLY);
      await within.sendOption(C.OPT_GO, goData(''));
      for (let i = 1; i < MAX_OPTIONS; i++) assert.equal((await within.optionReply()).type, C.REP_ERR_UNSUP);
      while ((await within.optionReply()).type !== C.REP_ACK);
      await within.sendRequest(C.CMD_FLUSH, 0, 0, 1n);
      assert.deepEqual(await within.simpleReply(), { magic: C.SIMPLE_REPLY_MAGIC, error: 0, handle: 1n });
      await within.sendRequest(C.CMD_DISC, 0, 0, 2n);
      assert.equal(await within.atEnd(), true);
      within.connection.close();

      // 33 options sent in one go: the first 32 are answered, then the connection ends, the last unread.
      const past = new RawPeer(await connectUnix(server.socket));
      await past.greet();
      for (let i = 0; i < MAX_OPTIONS; i++) await past.sendOption(C.OPT_STRUCTURED_REPLY);
      await past.sendOption(C.OPT_GO, goData(''));
      for (let i = 0; i < MAX_OPTIONS; i++) assert.equal((await past.optionReply()).type, C.REP_ERR_UNSUP);
      assert.equal(await past.atEnd(), true);
      past.connection.close();

      const [first, second] = await Promise.all(server.outcomes);
      assert.equal(first, undefined);
      assert.ok(second instanceof NbdProtocolError, String(second));
      assert.equal(
        second.message,
        'client sent more than 32 options without choosing an export (the last was NBD_OPT_GO)',
      );
    } finally {
      await server.close();
      await dir.remove();
    }
  });
});

describe('server transmission', () => {
  test('transmission flags of read-only and writable exports', async () => {
    const ro = await transmission('');
    assert.equal(ro.flags, C.FLAG_HAS_FLAGS | C.FLAG_READ_ONLY | C.FLAG_SEND_FLUSH);
    assert.equal(ro.flags & C.FLAG_CAN_MULTI_CONN, 0);
    ro.peer.connection.close();
    const rw = await transmission('rw');
    assert.equal(rw.flags, C.FLAG_HAS_FLAGS | C.FLAG_SEND_FLUSH | C.FLAG_SEND_FUA | C.FLAG_SEND_TRIM);
    rw.peer.connection.close();
    await Promise.all([ro.done, rw.done]);
  });

  test('reads return the data; past the end → EINVAL, and the session continues', async () => {
    const { peer, done } = await transmission('');
    await peer.sendRequest(C.CMD_READ, 1000, 100, 0x0102030405060708n);
    assert.deepEqual(await peer.simpleReply(), {
      magic: C.SIMPLE_REPLY_MAGIC,
      error: 0,
      handle: 0x0102030405060708n,
    });
    const data = await peer.take(100);
    for (let i = 0; i < 100; i++) assert.equal(data[i], ((1000 + i) * 7) & 0xff);

    for (const [offset, length] of [
      [SIZE - 10, 11],
      [SIZE + 1, 0],
      [2n ** 64n - 1n, 1],
      [2n ** 53n, 512],
    ] as const) {
      await peer.sendRequest(C.CMD_READ, offset, length, 2n);
      assert.deepEqual(await peer.simpleReply(), {
        magic: C.SIMPLE_REPLY_MAGIC,
        error: C.EINVAL,
        handle: 2n,
      });
    }
    // Exactly up to the end is fine.
    await peer.sendRequest(C.CMD_READ, SIZE - 10, 10, 3n);
    assert.equal((await peer.simpleReply()).error, 0);
    await peer.take(10);
    await peer.sendRequest(C.CMD_DISC, 0, 0, 4n);
    assert.equal(await done, 'resolved');
  });

  test('write and trim on a read-only export → EPERM, the payload is consumed', async () => {
    const { peer, done, devices } = await transmission('');
    const before = (devices[''] as MemoryBlockDevice).peek(0, 512);
    await peer.sendRequest(C.CMD_WRITE, 0, 512, 1n, 0, new Uint8Array(512).fill(0xee));
    assert.deepEqual(await peer.simpleReply(), { magic: C.SIMPLE_REPLY_MAGIC, error: C.EPERM, handle: 1n });
    await peer.sendRequest(C.CMD_TRIM, 0, 512, 2n);
    assert.equal((await peer.simpleReply()).error, C.EPERM);
    // Still in sync: the next request is parsed as a request, not as payload.
    await peer.sendRequest(C.CMD_READ, 0, 512, 3n);
    assert.deepEqual(await peer.simpleReply(), { magic: C.SIMPLE_REPLY_MAGIC, error: 0, handle: 3n });
    assert.deepEqual(await peer.take(512), before);
    await peer.sendRequest(C.CMD_DISC, 0, 0, 4n);
    assert.equal(await done, 'resolved');
  });

  test('writes, FUA, flush, trim and their errors on a writable export', async () => {
    const { peer, done, devices } = await transmission('rw');
    const device = devices.rw as MemoryBlockDevice;
    await peer.sendRequest(C.CMD_WRITE, 4096, 4, 1n, C.CMD_FLAG_FUA, new Uint8Array([1, 2, 3, 4]));
    assert.equal((await peer.simpleReply()).error, 0);
    assert.deepEqual(device.peek(4095, 6), new Uint8Array([0, 1, 2, 3, 4, 0]));
    await peer.sendRequest(C.CMD_FLUSH, 0, 0, 2n);
    assert.equal((await peer.simpleReply()).error, 0);
    await peer.sendRequest(C.CMD_TRIM, 4096, 2, 3n);
    assert.equal((await peer.simpleReply()).error, 0);
    assert.deepEqual(device.peek(4095, 6), new Uint8Array([0, 0, 0, 3, 4, 0]));
    // A write past the end: ENOSPC (proto.md), payload skipped.
    await peer.sendRequest(C.CMD_WRITE, SIZE - 2, 4, 4n, 0, new Uint8Array(4));
    assert.equal((await peer.simpleReply()).error, C.ENOSPC);
    await peer.sendRequest(C.CMD_TRIM, SIZE, 1, 5n);
    assert.equal((await peer.simpleReply()).error, C.EINVAL);
    await peer.sendRequest(C.CMD_DISC, 0, 0, 6n);
    assert.equal(await done, 'resolved');
  });

  test('a write longer than the maximum payload → EINVAL, its payload streamed away', async () => {
    const huge = 48 * 1024 * 1024;
    const { peer, done } = await transmission('rw', { rw: new MemoryBlockDevice(64 * 1024 * 1024) });
    await peer.sendRequest(C.CMD_WRITE, 0, huge, 1n);
    const chunk = new Uint8Array(1024 * 1024);
    for (let sent = 0; sent < huge; sent += chunk.length) await peer.send(chunk.slice());
    assert.equal((await peer.simpleReply()).error, C.EINVAL);
    await peer.sendRequest(C.CMD_READ, 0, 33 * 1024 * 1024, 2n);
    assert.equal((await peer.simpleReply()).error, C.EINVAL);
    await peer.sendRequest(C.CMD_READ, 0, 32 * 1024 * 1024, 3n);
    assert.equal((await peer.simpleReply()).error, 0);
    await peer.take(32 * 1024 * 1024);
    await peer.sendRequest(C.CMD_DISC, 0, 0, 4n);
    assert.equal(await done, 'resolved');
  });

  test('unknown commands and flags → EINVAL', async () => {
    const { peer, done } = await transmission('rw');
    for (const [type, flags] of [
      [C.CMD_DISC + 100, 0],
      [5, 0], // NBD_CMD_CACHE, not offered
      [6, 0], // NBD_CMD_WRITE_ZEROES, not offered
      [7, 0], // NBD_CMD_BLOCK_STATUS
      [C.CMD_READ, 1 << 2], // NBD_CMD_FLAG_DF without structured replies
    ] as const) {
      await peer.sendRequest(type, 0, 512, 9n, flags);
      assert.deepEqual(await peer.simpleReply(), {
        magic: C.SIMPLE_REPLY_MAGIC,
        error: C.EINVAL,
        handle: 9n,
      });
    }
    await peer.sendRequest(C.CMD_DISC, 0, 0, 10n);
    assert.equal(await done, 'resolved');
  });

  test('unaligned requests → EINVAL when the device advertises a minimum block size', async () => {
    const device = new MemoryBlockDevice(8192 + 100, {
      blockSize: { minimum: 512, preferred: 4096, maximum: 65536 },
    });
    const { peer, done } = await transmission('d', { d: device });
    await peer.sendRequest(C.CMD_READ, 100, 512, 1n);
    assert.equal((await peer.simpleReply()).error, C.EINVAL);
    await peer.sendRequest(C.CMD_WRITE, 0, 100, 2n, 0, new Uint8Array(100));
    assert.equal((await peer.simpleReply()).error, C.EINVAL);
    await peer.sendRequest(C.CMD_READ, 0, 65536 + 512, 3n);
    assert.equal((await peer.simpleReply()).error, C.EINVAL);
    // The unaligned tail of the export is reachable.
    await peer.sendRequest(C.CMD_READ, 8192, 100, 4n);
    assert.equal((await peer.simpleReply()).error, 0);
    await peer.take(100);
    await peer.sendRequest(C.CMD_DISC, 0, 0, 5n);
    assert.equal(await done, 'resolved');
  });

  test('a backend failure → EIO (or its NbdRequestError value) and the session continues', async () => {
    const errors: unknown[] = [];
    const flaky: BlockDevice = {
      size: 4096,
      readOnly: false,
      async read(offset) {
        if (offset === 0) throw new Error('disk on fire');
        if (offset === 512) return new Uint8Array(3); // wrong length
        return new Uint8Array(512).fill(1);
      },
      async write() {
        throw new NbdRequestError(C.ENOSPC, 'overlay full');
      },
      async flush() {
        throw Object.assign(new Error('readonly fs'), { code: 'EROFS' });
      },
    };
    const { peer, done } = await transmission('f', { f: flaky }, { onError: (e) => errors.push(e) });
    await peer.sendRequest(C.CMD_READ, 0, 512, 1n);
    assert.equal((await peer.simpleReply()).error, C.EIO);
    await peer.sendRequest(C.CMD_READ, 512, 512, 2n);
    assert.equal((await peer.simpleReply()).error, C.EIO);
    await peer.sendRequest(C.CMD_WRITE, 0, 512, 3n, 0, new Uint8Array(512));
    assert.equal((await peer.simpleReply()).error, C.ENOSPC);
    await peer.sendRequest(C.CMD_FLUSH, 0, 0, 4n);
    assert.equal((await peer.simpleReply()).error, C.EPERM);
    await peer.sendRequest(C.CMD_READ, 1024, 512, 5n);
    assert.equal((await peer.simpleReply()).error, 0);
    assert.deepEqual(await peer.take(512), new Uint8Array(512).fill(1));
    assert.equal(errors.length, 4);
    await peer.sendRequest(C.CMD_DISC, 0, 0, 6n);
    assert.equal(await done, 'resolved');
  });

  test('garbage instead of a request closes the connection', async () => {
    const { peer, done } = await transmission('');
    await peer.send(new Uint8Array(28).fill(0x5a));
    assert.equal(await peer.atEnd(), true);
    const error = await done;
    assert.ok(error instanceof NbdProtocolError);
    assert.match(error.message, /0x25609513/);
  });

  test('a request cut short by the client ends the session with a clear error', async () => {
    const { peer, done } = await transmission('rw');
    await peer.sendRequest(C.CMD_WRITE, 0, 4096, 1n, 0, new Uint8Array(100));
    peer.connection.close();
    const error = await done;
    assert.ok(error instanceof NbdDisconnectedError, String(error));
    assert.match(error.message, /100 of 4096 bytes of write payload/);
  });

  test('onRequest sees every accepted request', async () => {
    const seen: unknown[] = [];
    const { peer, done } = await transmission('rw', undefined, { onRequest: (r) => seen.push(r) });
    await peer.sendRequest(C.CMD_READ, 512, 1024, 1n);
    await peer.simpleReply();
    await peer.take(1024);
    await peer.sendRequest(C.CMD_WRITE, 0, 2, 2n, 0, new Uint8Array(2));
    await peer.simpleReply();
    await peer.sendRequest(C.CMD_FLUSH, 0, 0, 3n);
    await peer.simpleReply();
    await peer.sendRequest(C.CMD_TRIM, 0, 4096, 4n);
    await peer.simpleReply();
    await peer.sendRequest(C.CMD_READ, SIZE, 1, 5n); // rejected: not reported
    await peer.simpleReply();
    await peer.sendRequest(C.CMD_DISC, 0, 0, 6n);
    assert.equal(await done, 'resolved');
    assert.deepEqual(seen, [
      { type: 'read', offset: 512, length: 1024 },
      { type: 'write', offset: 0, length: 2 },
      { type: 'flush', offset: 0, length: 0 },
      { type: 'trim', offset: 0, length: 4096 },
    ]);
  });

  test('DISC waits for outstanding requests before closing', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const slow: BlockDevice = {
      size: 4096,
      readOnly: true,
      async read(_offset, length) {
        await gate;
        return new Uint8Array(length).fill(9);
      },
    };
    const { peer, done } = await transmission('s', { s: slow });
    await peer.sendRequest(C.CMD_READ, 0, 16, 1n);
    await peer.sendRequest(C.CMD_DISC, 0, 0, 2n);
    setTimeout(release, 50);
    assert.deepEqual(await peer.simpleReply(), { magic: C.SIMPLE_REPLY_MAGIC, error: 0, handle: 1n });
    assert.deepEqual(await peer.take(16), new Uint8Array(16).fill(9));
    assert.equal(await peer.atEnd(), true);
    assert.equal(await done, 'resolved');
  });

  test('at most maxInFlight requests reach the device; the server stops reading meanwhile', async () => {
    let active = 0;
    let peak = 0;
    const gates: Array<() => void> = [];
    const device: BlockDevice = {
      size: SIZE,
      readOnly: true,
      async read(_offset, length) {
        active++;
        peak = Math.max(peak, active);
        await new Promise<void>((resolve) => gates.push(resolve));
        active--;
        return new Uint8Array(length);
      },
    };
    const [serverEnd, clientEnd] = createConnectionPair({ highWaterMark: 1024 });
    const done = serveNbd(serverEnd, () => device, { maxInFlight: 4 });
    const peer = new RawPeer(clientEnd);
    await peer.greet();
    await peer.sendOption(C.OPT_GO, goData(''));
    while ((await peer.optionReply()).type !== C.REP_ACK);
    // 200 requests = 5600 bytes: more than the pipe holds, so sending them blocks until replies flow.
    const sending = (async () => {
      for (let i = 0; i < 200; i++) await peer.sendRequest(C.CMD_READ, i * 512, 512, BigInt(i));
    })();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(active, 4);
    assert.equal(gates.length, 4);
    const handles = new Set<bigint>();
    const draining = (async () => {
      while (handles.size < 200) {
        const reply = await peer.simpleReply();
        assert.equal(reply.error, 0);
        await peer.take(512);
        handles.add(reply.handle);
      }
    })();
    while (handles.size < 200) {
      const gate = gates.shift();
      if (gate) gate();
      await new Promise((resolve) => setImmediate(resolve));
    }
    await Promise.all([sending, draining]);
    assert.equal(peak, 4);
    await peer.sendRequest(C.CMD_DISC, 0, 0, 999n);
    await done;
  });

  test('abort during transmission answers outstanding requests, then closes', async () => {
    const controller = new AbortController();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const device: BlockDevice = {
      size: 4096,
      readOnly: true,
      async read(_offset, length) {
        await gate;
        return new Uint8Array(length);
      },
    };
    const { peer, done } = await transmission('x', { x: device }, { signal: controller.signal });
    await peer.sendRequest(C.CMD_READ, 0, 512, 1n);
    await new Promise((resolve) => setTimeout(resolve, 20));
    controller.abort();
    release();
    assert.equal((await peer.simpleReply()).error, 0);
    await peer.take(512);
    assert.equal(await peer.atEnd(), true);
    assert.equal(await done, 'resolved');
  });

  test('abort during the handshake closes at once', async () => {
    const controller = new AbortController();
    const { peer, done } = session(exports(), { signal: controller.signal });
    await peer.greet();
    controller.abort();
    assert.equal(await peer.atEnd(), true);
    assert.equal(await done, 'resolved');
  });
});

describe('client against broken servers', () => {
  async function connectTo(serverScript: (peer: RawPeer) => Promise<void>, exportName = '') {
    const [serverEnd, clientEnd] = createConnectionPair();
    const peer = new RawPeer(serverEnd);
    const script = serverScript(peer).catch(() => undefined);
    const result = NbdClient.connect(clientEnd, { exportName });
    return { result, script, peer };
  }

  /** A well-behaved greeting and GO reply for a 1 MiB writable export. */
  async function goodHandshake(peer: RawPeer): Promise<void> {
    const hello = new Uint8Array(18);
    const view = viewOf(hello);
    view.setBigUint64(0, C.NBDMAGIC);
    view.setBigUint64(8, C.IHAVEOPT);
    view.setUint16(16, 3);
    await peer.send(hello);
    await peer.take(4);
    const header = viewOf(await peer.take(16));
    await peer.take(header.getUint32(12));
    const info = new Uint8Array(20 + 12);
    const iv = viewOf(info);
    iv.setBigUint64(0, C.OPTION_REPLY_MAGIC);
    iv.setUint32(8, C.OPT_GO);
    iv.setUint32(12, C.REP_INFO);
    iv.setUint32(16, 12);
    iv.setUint16(20, C.INFO_EXPORT);
    iv.setBigUint64(22, BigInt(SIZE));
    iv.setUint16(30, C.FLAG_HAS_FLAGS | C.FLAG_SEND_FLUSH);
    const ack = new Uint8Array(20);
    const av = viewOf(ack);
    av.setBigUint64(0, C.OPTION_REPLY_MAGIC);
    av.setUint32(8, C.OPT_GO);
    av.setUint32(12, C.REP_ACK);
    await peer.send(info, ack);
  }

  test('falls back to NBD_OPT_EXPORT_NAME when NBD_OPT_GO is unsupported (and reads the padding)', async () => {
    const { result, peer } = await connectTo(async (peer) => {
      const hello = new Uint8Array(18);
      viewOf(hello).setBigUint64(0, C.NBDMAGIC);
      viewOf(hello).setBigUint64(8, C.IHAVEOPT);
      viewOf(hello).setUint16(16, C.FLAG_FIXED_NEWSTYLE); // no NO_ZEROES
      await peer.send(hello);
      assert.equal(viewOf(await peer.take(4)).getUint32(0), C.FLAG_C_FIXED_NEWSTYLE);
      const go = viewOf(await peer.take(16));
      assert.equal(go.getUint32(8), C.OPT_GO);
      await peer.take(go.getUint32(12));
      const unsup = new Uint8Array(20);
      viewOf(unsup).setBigUint64(0, C.OPTION_REPLY_MAGIC);
      viewOf(unsup).setUint32(8, C.OPT_GO);
      viewOf(unsup).setUint32(12, C.REP_ERR_UNSUP);
      await peer.send(unsup);
      const exportName = viewOf(await peer.take(16));
      assert.equal(exportName.getUint32(8), C.OPT_EXPORT_NAME);
      assert.equal(new TextDecoder().decode(await peer.take(exportName.getUint32(12))), 'legacy');
      const reply = new Uint8Array(134);
      viewOf(reply).setBigUint64(0, 2n ** 33n);
      viewOf(reply).setUint16(8, C.FLAG_HAS_FLAGS | C.FLAG_READ_ONLY);
      await peer.send(reply);
    }, 'legacy');
    const client = await result;
    assert.equal(client.size, 2 ** 33);
    assert.equal(client.readOnly, true);
    assert.equal(client.canFlush, false);
    const read = client.read(2 ** 33 - 4, 4);
    const request = viewOf(await peer.take(28));
    assert.equal(request.getBigUint64(16), 2n ** 33n - 4n);
    const reply = new Uint8Array(20);
    viewOf(reply).setUint32(0, C.SIMPLE_REPLY_MAGIC);
    viewOf(reply).setBigUint64(8, request.getBigUint64(8));
    reply.set([1, 2, 3, 4], 16);
    await peer.send(reply);
    assert.deepEqual(await read, new Uint8Array([1, 2, 3, 4]));
    await client.flush(); // not offered: nothing is sent
    const closing = client.close();
    assert.equal(viewOf(await peer.take(28)).getUint16(6), C.CMD_DISC);
    peer.connection.close();
    await closing;
  });

  test('garbage instead of NBDMAGIC rejects connect clearly', async () => {
    const { result } = await connectTo(async (peer) => {
      await peer.send(new TextEncoder().encode('SSH-2.0-OpenSSH_9.2\r\n'));
    });
    await assert.rejects(result, (error: Error) => {
      assert.ok(error instanceof NbdProtocolError);
      assert.match(error.message, /not an NBD server: expected NBDMAGIC, got 0x5353482d.*"SSH-2.0-"/);
      return true;
    });
  });

  test('a server that closes at once rejects connect', async () => {
    const { result } = await connectTo(async (peer) => peer.connection.close());
    await assert.rejects(result, NbdDisconnectedError);
  });

  test('an oldstyle server is refused by name', async () => {
    const { result } = await connectTo(async (peer) => {
      const hello = new Uint8Array(152);
      viewOf(hello).setBigUint64(0, C.NBDMAGIC);
      viewOf(hello).setBigUint64(8, C.CLISERV_MAGIC);
      await peer.send(hello);
    });
    await assert.rejects(result, /oldstyle/);
  });

  test('an unknown export rejects connect with the server’s reply', async () => {
    const [serverEnd, clientEnd] = createConnectionPair();
    const served = serveNbd(serverEnd, () => undefined);
    await assert.rejects(NbdClient.connect(clientEnd, { exportName: 'nope' }), (error: Error) => {
      assert.ok(error instanceof NbdOptionError);
      assert.equal(error.reply, C.REP_ERR_UNKNOWN);
      assert.match(error.message, /refused export 'nope': NBD_REP_ERR_UNKNOWN \(unknown export 'nope'\)/);
      return true;
    });
    await served;
  });

  test('bad reply magic fails every outstanding request', async () => {
    const { result, peer } = await connectTo(goodHandshake);
    const client = await result;
    const reads = [client.read(0, 512), client.read(512, 512), client.write(0, new Uint8Array(4))];
    await peer.take(28 * 2 + 28 + 4);
    await peer.send(new Uint8Array(16).fill(0x13));
    for (const read of reads) await assert.rejects(read, /bad reply magic/);
    assert.ok((await client.closed) instanceof NbdProtocolError);
    await assert.rejects(client.read(0, 1), /bad reply magic/);
  });

  test('a server closing mid-reply fails every outstanding request', async () => {
    const { result, peer } = await connectTo(goodHandshake);
    const client = await result;
    const first = client.read(0, 512);
    const second = client.read(512, 512);
    const request = viewOf(await peer.take(28));
    await peer.take(28);
    const reply = new Uint8Array(16 + 100);
    viewOf(reply).setUint32(0, C.SIMPLE_REPLY_MAGIC);
    viewOf(reply).setBigUint64(8, request.getBigUint64(8));
    await peer.send(reply);
    peer.connection.close();
    await assert.rejects(first, /connection closed after 100 of 512 bytes of read reply data/);
    await assert.rejects(second, NbdDisconnectedError);
    assert.ok((await client.closed) instanceof NbdDisconnectedError);
  });

  test('a reply to an unknown handle is a protocol error', async () => {
    const { result, peer } = await connectTo(goodHandshake);
    const client = await result;
    const read = client.read(0, 512);
    await peer.take(28);
    const reply = new Uint8Array(16);
    viewOf(reply).setUint32(0, C.SIMPLE_REPLY_MAGIC);
    viewOf(reply).setBigUint64(8, 0xdeadbeefn);
    await peer.send(reply);
    await assert.rejects(read, /unknown handle/);
  });

  test('an error reply rejects that request only, with the NBD error name', async () => {
    const { result, peer } = await connectTo(goodHandshake);
    const client = await result;
    const read = client.read(4096, 512);
    const flush = client.flush();
    const readReq = viewOf(await peer.take(28));
    const flushReq = viewOf(await peer.take(28));
    const r1 = new Uint8Array(16);
    viewOf(r1).setUint32(0, C.SIMPLE_REPLY_MAGIC);
    viewOf(r1).setUint32(4, C.EIO);
    viewOf(r1).setBigUint64(8, readReq.getBigUint64(8));
    const r2 = new Uint8Array(16);
    viewOf(r2).setUint32(0, C.SIMPLE_REPLY_MAGIC);
    viewOf(r2).setBigUint64(8, flushReq.getBigUint64(8));
    await peer.send(r2, r1); // out of order
    await flush;
    await assert.rejects(read, (error: Error) => {
      assert.ok(error instanceof NbdRequestError);
      assert.equal(error.errno, C.EIO);
      assert.equal(error.code, 'EIO');
      assert.match(error.message, /read of 512 bytes at offset 4096 failed: EIO/);
      return true;
    });
    const closing = client.close();
    const disc = viewOf(await peer.take(28));
    assert.equal(disc.getUint16(6), C.CMD_DISC);
    peer.connection.close();
    await closing;
    assert.equal(await client.closed, undefined);
  });

  test('close() does not hang on a server that stopped answering', async () => {
    const { result, peer } = await connectTo(goodHandshake);
    const client = await result;
    const read = settle(client.read(0, 512));
    await peer.take(28);
    const started = Date.now();
    await client.close({ graceMs: 100 });
    assert.ok(Date.now() - started < 1000);
    assert.match(String(await read), /client closed with 1 request\(s\) outstanding/);
    assert.equal(await peer.atEnd(), true);
  });

  test('client-side checks: range, read-only, closed', async () => {
    const [serverEnd, clientEnd] = createConnectionPair();
    const device = new MemoryBlockDevice(4096, { readOnly: true });
    const served = serveNbd(serverEnd, () => device);
    const client = await NbdClient.connect(clientEnd);
    assert.equal(client.readOnly, true);
    await assert.rejects(client.read(4000, 200), RangeError);
    await assert.rejects(client.read(-1, 1), RangeError);
    await assert.rejects(client.write(0, new Uint8Array(1)), (e: Error) => e instanceof NbdRequestError);
    await client.close();
    await assert.rejects(client.read(0, 1), NbdDisconnectedError);
    await served;
  });
});
