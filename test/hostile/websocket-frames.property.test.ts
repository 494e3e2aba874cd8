import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { WebSocket } from 'ws';
import { serveNbd } from '../../src/nbd/server/serve.ts';
import { NodeWebSocketConnection as WebSocketConnection } from '../../src/transport/node-websocket-connection.ts';
import { hostUri, nbdToolBytes, opened, slotFreed, upgrade } from '../bridge/helpers.ts';
import { MemoryBlockDevice } from '../helpers/nbd-memory.ts';
import { adminPassword } from '../helpers/server.ts';
import { startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';
import { waitFor } from '../helpers/wait.ts';

const RUNS = Number(process.env.VMEDIA_PROPERTY_RUNS ?? 40);

/** One thing a hostile peer does on the socket. */
type Step =
  | { kind: 'text'; data: string }
  | { kind: 'binary'; data: Uint8Array }
  | { kind: 'oversized' }
  | { kind: 'fragments'; parts: Uint8Array[] }
  | { kind: 'pings'; count: number }
  | { kind: 'close'; code: number }
  | { kind: 'terminate' };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ kind: fc.constant('text' as const), data: fc.string({ maxLength: 64 }) }),
  fc.record({ kind: fc.constant('binary' as const), data: fc.uint8Array({ maxLength: 256 }) }),
  fc.constant({ kind: 'oversized' as const }),
  fc.record({
    kind: fc.constant('fragments' as const),
    parts: fc.array(fc.uint8Array({ minLength: 1, maxLength: 64 }), { minLength: 2, maxLength: 5 }),
  }),
  fc.record({ kind: fc.constant('pings' as const), count: fc.integer({ min: 1, max: 500 }) }),
  fc.record({
    kind: fc.constant('close' as const),
    code: fc.constantFrom(1000, 1001, 1002, 1003, 1007, 1008, 1011, 3000, 4999),
  }),
  fc.constant({ kind: 'terminate' as const }),
);

function play(ws: WebSocket, action: Step, maxMessage: number): void {
  if (ws.readyState !== ws.OPEN) return;
  switch (action.kind) {
    case 'text':
      ws.send(action.data);
      break;
    case 'binary':
      ws.send(action.data);
      break;
    case 'oversized':
      ws.send(Buffer.alloc(maxMessage + 1));
      break;
    case 'fragments':
      action.parts.forEach((part, index) => {
        ws.send(part, { binary: true, fin: index === action.parts.length - 1 });
      });
      break;
    case 'pings':
      for (let i = 0; i < action.count; i++) ws.ping();
      break;
    case 'close':
      ws.close(action.code);
      break;
    case 'terminate':
      ws.terminate();
      break;
  }
}

/**
 * The /nbd bridge against a hostile WebSocket peer: text frames, garbage, messages over the limit,
 * fragmented messages, ping floods, odd close codes, a dropped connection — in any order, after a real
 * mount or instead of one. The server never crashes, every such session ends, the slot is free again,
 * and a proper mount afterwards serves the exact bytes.
 */
describe('the /nbd bridge against hostile WebSocket peers', () => {
  let stack: VmStack;
  let token: string;

  before(async () => {
    stack = await startVmStack({ images: {} });
    token = (await stack.server.login('admin', adminPassword)).token;
  });

  after(async () => {
    await stack?.stop();
  });

  test('any sequence of frames ends the session and frees the slot; the next mount works', async () => {
    const maxMessage = stack.server.app.nbdBridge.limits.maxMessage;
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.array(step, { minLength: 1, maxLength: 6 }),
        async (mountFirst, steps) => {
          const ws = opened(await upgrade(stack, '/nbd/0', { headers: { 'X-Auth-Token': token } }));
          const closed = once(ws, 'close');
          ws.on('error', () => undefined);
          if (mountFirst) {
            // A real NBD server first, so the hostile frames land in a running transmission.
            const served = serveNbd(
              new WebSocketConnection(ws),
              () => new MemoryBlockDevice(64 * 1024, { readOnly: true }),
            );
            served.catch(() => undefined);
            await waitFor(() => stack.client.slot('Slot_0')?.active === true || ws.readyState !== ws.OPEN, {
              what: 'Slot_0 to be mounted',
              timeoutMs: 10_000,
            });
          }
          for (const action of steps) play(ws, action, maxMessage);
          // Whatever the peer did, it now hangs up if the bridge has not closed already.
          setTimeout(() => ws.terminate(), 500);
          await closed;
          await slotFreed(stack, 'Slot_0');
        },
      ),
      { numRuns: RUNS, includeErrorInReport: true },
    );
    console.log(`${RUNS} hostile WebSocket peers, every session ended and Slot_0 freed`);

    const image = randomBytes(256 * 1024);
    const ws = opened(await upgrade(stack, '/nbd/0', { headers: { 'X-Auth-Token': token } }));
    const served = serveNbd(
      new WebSocketConnection(ws),
      () => new MemoryBlockDevice(image.length, { data: image, readOnly: true }),
    );
    await waitFor(() => stack.client.slot('Slot_0')?.active === true, { what: 'Slot_0 to be mounted' });
    const copy = await nbdToolBytes('nbdcopy', [hostUri(stack, 'Slot_0'), '-']);
    const sha = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
    assert.equal(sha(copy), sha(image));
    ws.close();
    await slotFreed(stack, 'Slot_0');
    await served.catch(() => undefined);
  });
});
