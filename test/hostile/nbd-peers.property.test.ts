import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { BlockDevice } from '../../src/nbd/block-device.ts';
import { NbdClient } from '../../src/nbd/client/client.ts';
import {
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_HAS_FLAGS,
  FLAG_NO_ZEROES,
  OPT_GO,
  REP_ACK,
  REP_INFO,
  SIMPLE_REPLY_MAGIC,
} from '../../src/nbd/constants.ts';
import {
  encodeClientFlags,
  encodeGreeting,
  encodeInfoExport,
  encodeInfoRequest,
  encodeOption,
  encodeOptionReply,
  encodeRequest,
} from '../../src/nbd/protocol.ts';
import { serveNbd } from '../../src/nbd/server/serve.ts';
import { createConnectionPair, MemoryBlockDevice } from '../helpers/nbd-memory.ts';

/** Every run's settle bound: a hostile peer must never leave the other side hanging. */
const SETTLE_MS = 5000;
const RUNS = Number(process.env.VMEDIA_PROPERTY_RUNS ?? 150);

function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${SETTLE_MS} ms`)), SETTLE_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const concat = (parts: Uint8Array[]) => {
  const all = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    all.set(part, at);
    at += part.length;
  }
  return all;
};

/** A device that fails the run if the server ever asks it for bytes outside the medium. */
function guardedDevice(size: number): BlockDevice & { outOfRange: string[] } {
  const inner = new MemoryBlockDevice(size, { readOnly: true });
  const outOfRange: string[] = [];
  return {
    size,
    readOnly: true,
    outOfRange,
    read(offset, length) {
      if (offset < 0 || length < 0 || offset + length > size) outOfRange.push(`${offset}+${length}`);
      return inner.read(offset, length);
    },
  };
}

/** A request header with every field drawn freely: any magic (mostly the right one), type, flags, range. */
const request = fc
  .record({
    magicRight: fc.boolean(),
    magic: fc.integer({ min: 0, max: 0xffffffff }),
    type: fc.oneof(fc.constantFrom(0, 1, 2, 3, 4, 5, 6), fc.integer({ min: 0, max: 0xffff })),
    flags: fc.integer({ min: 0, max: 0xffff }),
    handle: fc.integer({ min: 0, max: 0xffffffff }),
    offset: fc.oneof(fc.integer({ min: 0, max: 1 << 20 }), fc.constant(Number.MAX_SAFE_INTEGER), fc.nat()),
    length: fc.oneof(
      fc.integer({ min: 0, max: 1 << 16 }),
      fc.constant(0xffffffff),
      fc.integer({ min: 0, max: 0xffffffff }),
    ),
    payload: fc.uint8Array({ maxLength: 64 }),
  })
  .map(({ magicRight, magic, type, flags, handle, offset, length, payload }) => {
    const header = encodeRequest(type, flags, handle, offset, length);
    if (!magicRight) new DataView(header.buffer).setUint32(0, magic);
    return concat([header, payload]);
  });

/** What a client sends: garbage from the first byte, or a proper handshake followed by hostile requests. */
const clientBytes = fc.oneof(
  fc.uint8Array({ maxLength: 512 }).map((bytes) => [bytes]),
  fc
    .array(request, { maxLength: 12 })
    .map((requests) => [
      encodeClientFlags(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES),
      encodeOption(OPT_GO, encodeInfoRequest('', [])),
      ...requests,
    ]),
  fc
    .tuple(
      fc.uint8Array({ maxLength: 64 }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 1 << 20 }),
    )
    .map(([data, option, claimedLength]) => {
      // An option header whose length field lies about what follows.
      const header = encodeOption(option, data);
      new DataView(header.buffer).setUint32(12, claimedLength);
      return [encodeClientFlags(FLAG_C_FIXED_NEWSTYLE), header];
    }),
);

test('the NBD server against a hostile client: it settles, reads nothing out of range, and never crashes', async () => {
  await fc.assert(
    fc.asyncProperty(clientBytes, fc.integer({ min: 0, max: 1 << 20 }), async (chunks, size) => {
      const device = guardedDevice(size);
      const [serverEnd, clientEnd] = createConnectionPair({ highWaterMark: 64 * 1024 });
      const served = serveNbd(serverEnd, () => device, { maxInFlight: 8 }).then(
        () => 'ended',
        (error: unknown) => {
          assert.ok(error instanceof Error, `rejected with a non-Error: ${String(error)}`);
          return 'refused';
        },
      );
      // The client writes everything, reads whatever comes back, then hangs up.
      const drained = (async () => {
        for (;;) if ((await clientEnd.read()) === null) return;
      })();
      for (const chunk of chunks) await clientEnd.write(chunk).catch(() => undefined);
      clientEnd.close();
      await within(served, 'serveNbd');
      await within(drained, 'the reply stream');
      assert.deepEqual(device.outOfRange, []);
    }),
    { numRuns: RUNS, includeErrorInReport: true },
  );
  console.log(`${RUNS} hostile peers, none crashed or hung the other side`);
});

/**
 * A server that greets properly (or not), may lie about the export's size and flags, and then answers
 * reads with replies drawn freely: wrong magic, unknown handles, errors, out of order, cut short.
 */
const serverScript = fc.record({
  greetingRight: fc.boolean(),
  greetingJunk: fc.uint8Array({ maxLength: 32 }),
  size: fc.oneof(fc.integer({ min: 0, max: 1 << 20 }), fc.constant(Number.MAX_SAFE_INTEGER), fc.nat()),
  exportFlags: fc.integer({ min: 0, max: 0xffff }),
  replies: fc.array(
    fc.record({
      magicRight: fc.boolean(),
      error: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffffffff })),
      handle: fc.oneof(fc.integer({ min: 0, max: 16 }), fc.integer({ min: 0, max: 0xffffffff })),
      data: fc.uint8Array({ maxLength: 4096 }),
    }),
    { maxLength: 8 },
  ),
});

function serverBytes(script: {
  greetingRight: boolean;
  greetingJunk: Uint8Array;
  size: number;
  exportFlags: number;
  replies: { magicRight: boolean; error: number; handle: number; data: Uint8Array }[];
}): Uint8Array[] {
  if (!script.greetingRight) return [script.greetingJunk];
  const replies = script.replies.map(({ magicRight, error, handle, data }) => {
    const header = new Uint8Array(16);
    const view = new DataView(header.buffer);
    view.setUint32(0, magicRight ? SIMPLE_REPLY_MAGIC : 0xdeadbeef);
    view.setUint32(4, error);
    view.setUint32(12, handle);
    return concat([header, data]);
  });
  return [
    encodeGreeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES),
    encodeOptionReply(OPT_GO, REP_INFO, encodeInfoExport(script.size, script.exportFlags | FLAG_HAS_FLAGS)),
    encodeOptionReply(OPT_GO, REP_ACK),
    ...replies,
  ];
}

test('the NBD client against a hostile server: connect and reads settle with data of the asked length or an Error', async () => {
  await fc.assert(
    fc.asyncProperty(
      serverScript,
      fc.array(fc.integer({ min: 0, max: 8192 }), { maxLength: 4 }),
      async (script, lengths) => {
        const [serverEnd, clientEnd] = createConnectionPair();
        const server = (async () => {
          // Greet, let the client speak (its flags and option), answer with the rest of the script, and
          // hang up shortly after: a peer that stays silent forever is for the caller's timeouts.
          const [greeting, ...rest] = serverBytes(script);
          await serverEnd.write(greeting!).catch(() => undefined);
          await Promise.race([serverEnd.read(), new Promise((resolve) => setTimeout(resolve, 100))]);
          for (const chunk of rest) await serverEnd.write(chunk).catch(() => undefined);
          setTimeout(() => serverEnd.close(), 50);
          while ((await serverEnd.read()) !== null);
        })();
        const outcome = await within(
          NbdClient.connect(clientEnd).then(
            async (client) => {
              const reads = lengths.map((length) =>
                client.read(0, Math.min(length, Math.max(0, client.size))).then(
                  (data) =>
                    assert.equal(
                      data.length,
                      Math.min(length, Math.max(0, client.size)),
                      'a read answered the wrong length',
                    ),
                  (error: unknown) =>
                    assert.ok(error instanceof Error, `a read rejected with ${String(error)}`),
                ),
              );
              await within(Promise.all(reads), 'the reads');
              await client.close().catch(() => undefined);
              return 'attached';
            },
            (error: unknown) => {
              assert.ok(error instanceof Error, `connect rejected with ${String(error)}`);
              return 'refused';
            },
          ),
          'NbdClient.connect',
        );
        serverEnd.close();
        await within(server, 'the scripted server');
        assert.ok(outcome === 'attached' || outcome === 'refused');
      },
    ),
    { numRuns: RUNS, includeErrorInReport: true },
  );
  console.log(`${RUNS} hostile peers, none crashed or hung the other side`);
});
