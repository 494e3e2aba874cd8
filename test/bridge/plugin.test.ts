import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { serveNbd } from '../../src/nbd/server/serve.ts';
import { NodeWebSocketConnection as WebSocketConnection } from '../../src/transport/node-websocket-connection.ts';
import { MemoryBlockDevice } from '../helpers/nbd-memory.ts';
import { adminPassword } from '../helpers/server.ts';
import { startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';
import { waitFor } from '../helpers/wait.ts';
import {
  bufferBound,
  closeOf,
  hostUri,
  nbdToolBytes,
  opened,
  quiescent,
  slotFreed,
  upgrade,
} from './helpers.ts';

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const basic = (user: string, password: string) => ({
  Authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`,
});

describe('the /nbd bridge on the real server and service', () => {
  let stack: VmStack;
  let token: string;

  before(async () => {
    stack = await startVmStack({ images: {} });
    token = (await stack.server.login('admin', adminPassword)).token;
    const created = await stack.server.request('POST', '/redfish/v1/AccountService/Accounts', {
      body: { UserName: 'reader', Password: 'reader-password', RoleId: 'ReadOnly' },
    });
    assert.equal(created.status, 201);
  });

  after(async () => {
    await stack?.stop();
  });

  /** Serves `image` over a new session on Slot_0; answers the WebSocket and the running server. */
  async function mountMemory(image: Uint8Array, headers: Record<string, string> = { 'X-Auth-Token': token }) {
    const ws = opened(await upgrade(stack, '/nbd/0', { headers }));
    const connection = new WebSocketConnection(ws);
    const served = serveNbd(
      connection,
      () => new MemoryBlockDevice(image.length, { data: image, readOnly: true }),
    );
    served.catch(() => undefined);
    await waitFor(() => stack.client.slot('Slot_0')?.active === true, { what: 'Slot_0 to be inserted' });
    return { ws, connection, served };
  }

  function assertNothingFlowed() {
    const slot = stack.client.slot('Slot_0')!;
    assert.equal(stack.server.app.nbdBridge.has('Slot_0'), false, 'no session');
    assert.equal(fs.existsSync(slot.socket), false, 'no slot socket');
    assert.equal(slot.active, false, 'nothing mounted');
  }

  test('refused before the upgrade, connection closed: no credentials, ReadOnly, wrong XSRF subprotocol, not an endpoint', async () => {
    assert.equal((await upgrade(stack, '/nbd/0')).status, 401);
    assertNothingFlowed();
    assert.equal((await upgrade(stack, '/nbd/0', { headers: { 'X-Auth-Token': 'f00d' } })).status, 401);
    assert.equal(
      (await upgrade(stack, '/nbd/0', { headers: basic('reader', 'reader-password') })).status,
      403,
    );
    assertNothingFlowed();

    const login = await stack.server.request('POST', '/login', {
      auth: { none: true },
      body: { username: 'admin', password: adminPassword },
    });
    const cookies = ([] as string[]).concat(login.headers['set-cookie'] ?? []).map((c) => c.split(';')[0]!);
    const cookie = { Cookie: cookies.join('; ') };
    assert.equal((await upgrade(stack, '/nbd/0', { headers: cookie })).status, 403, 'cookie without XSRF');
    const wrong = await upgrade(stack, '/nbd/0', { headers: cookie, protocols: ['0123456789abcdef'] });
    assert.equal(wrong.status, 403);
    assertNothingFlowed();

    // Not a Proxy slot's EndpointId, even where an ordinary route exists (the connection is closed).
    assert.equal((await upgrade(stack, '/nbd/7', { headers: { 'X-Auth-Token': token } })).status, 404);
    const redfish = await upgrade(stack, '/redfish/v1/Managers', { headers: { 'X-Auth-Token': token } });
    assert.equal(redfish.status, 404);
    assertNothingFlowed();

    // The right token, offered as the subprotocol, is accepted and echoed (a browser insists on it).
    const xsrf = cookies.find((c) => c.startsWith('XSRF-TOKEN='))!.slice('XSRF-TOKEN='.length);
    const ws = opened(await upgrade(stack, '/nbd/0', { headers: cookie, protocols: [xsrf] }));
    assert.equal(ws.protocol, xsrf);
    ws.close();
    await slotFreed(stack, 'Slot_0');
  });

  test('serves an image to the host; a second connection gets 409; closing the WebSocket frees the slot', async () => {
    const image = randomBytes(3 * 1024 * 1024 + 512);
    // A crash can leave the socket file behind; the bridge replaces it.
    fs.writeFileSync(stack.client.slot('Slot_0')!.socket, 'stale');
    const { ws, served } = await mountMemory(image);
    const slot = stack.client.slot('Slot_0')!;
    assert.equal(fs.statSync(slot.socket).mode & 0o777, 0o600);

    const second = await upgrade(stack, '/nbd/0', { headers: { 'X-Auth-Token': token } });
    assert.equal(second.status, 409);

    const copy = await nbdToolBytes('nbdcopy', [hostUri(stack, 'Slot_0'), '-']);
    assert.equal(sha256(copy), sha256(image));

    const closedAt = Date.now();
    ws.close();
    await slotFreed(stack, 'Slot_0', 1000);
    assert.ok(Date.now() - closedAt < 1000);
    await served;
  });

  test("a peer closing without a code (a browser's ws.close()) is answered with 1000 and frees the slot", async () => {
    const { ws, served } = await mountMemory(randomBytes(64 * 1024));
    const closed = once(ws, 'close');
    ws.close();
    const [code] = await closed;
    assert.equal(code, 1000);
    await slotFreed(stack, 'Slot_0', 1000);
    await served;
  });

  test('killing the WebSocket peer (no close frame) frees the slot', async () => {
    const { ws } = await mountMemory(randomBytes(64 * 1024));
    ws.terminate();
    await slotFreed(stack, 'Slot_0', 1000);
  });

  test('a text frame closes with 1003 and an oversized message with 1009; the slot is freed', async () => {
    const text = opened(await upgrade(stack, '/nbd/1', { headers: { 'X-Auth-Token': token } }));
    text.send('not NBD');
    assert.equal((await closeOf(text)).code, 1003);
    await slotFreed(stack, 'Slot_1');

    const big = opened(await upgrade(stack, '/nbd/1', { headers: { 'X-Auth-Token': token } }));
    big.send(Buffer.alloc(stack.server.app.nbdBridge.limits.maxMessage + 1));
    assert.equal((await closeOf(big)).code, 1009);
    await slotFreed(stack, 'Slot_1');
  });

  test('a failed mount (the peer does not speak NBD) closes with 1011 and the errno', async () => {
    const ws = opened(await upgrade(stack, '/nbd/1', { headers: { 'X-Auth-Token': token } }));
    ws.send(Buffer.from('this is not an NBD server greeting, not at all, no'));
    const { code, reason } = await closeOf(ws);
    assert.equal(code, 1011);
    assert.match(reason, /mount failed: E[A-Z]+ \(\d+\)/);
    await slotFreed(stack, 'Slot_1');
  });

  test('with the host side stalled, the bridge stops reading the WebSocket within its bound', async () => {
    const { ws } = await mountMemory(randomBytes(64 * 1024));
    const service = stack.harness.service;
    service.kill('SIGSTOP');
    try {
      // Bytes the stopped service never reads (what they are does not matter any more).
      const flood = Buffer.alloc(256 * 1024, 0xa5);
      const total = 64 * 1024 * 1024;
      for (let sent = 0; sent < total; sent += flood.length) ws.send(flood);
      await quiescent(() => ws.bufferedAmount);
      const stats = stack.server.app.nbdBridge.stats('Slot_0')!;
      assert.equal(stats.webSocketPaused, true);
      assert.ok(ws.bufferedAmount > total / 2, `the client still holds ${ws.bufferedAmount} bytes`);
      assert.ok(stats.bytesToSocket < total / 2, `relayed ${stats.bytesToSocket} bytes to a stopped host`);
      const bound = bufferBound(stack.server.app.nbdBridge.limits);
      assert.ok(stats.peakSocketBuffered <= bound, `peak ${stats.peakSocketBuffered} > ${bound}`);
      assert.ok(stats.peakSocketBuffered > stack.server.app.nbdBridge.limits.highWaterMark);
    } finally {
      service.kill('SIGCONT');
    }
    ws.terminate();
    await slotFreed(stack, 'Slot_0');
  });

  test('killing the host side (the service) closes the WebSocket and frees the slot', async () => {
    const { ws } = await mountMemory(randomBytes(64 * 1024));
    const closing = closeOf(ws);
    await stack.killService();
    assert.ok([1001, 1011].includes((await closing).code));
    const socket = stack.client.slot('Slot_0')?.socket;
    await waitFor(() => !stack.server.app.nbdBridge.has('Slot_0'), {
      what: 'the session to end',
      timeoutMs: 1000,
    });
    if (socket) assert.equal(fs.existsSync(socket), false);
    await stack.restartService();
    await waitFor(() => stack.client.available, { what: 'the service to be back' });
    assertNothingFlowed();
  });

  test('closeSession (EjectMedia on a Proxy slot) closes with 1000 and unmounts', async () => {
    const { ws } = await mountMemory(randomBytes(64 * 1024));
    const closing = closeOf(ws);
    assert.equal(await stack.server.app.nbdBridge.closeSession('Slot_0', 'ejected'), true);
    assert.equal((await closing).code, 1000);
    await slotFreed(stack, 'Slot_0');
    assert.equal(await stack.server.app.nbdBridge.closeSession('Slot_0', 'ejected'), false);
  });

  test('ending the login session (DELETE, logout) ends the relay it opened with 1008; others stay', async () => {
    const login = await stack.server.login('admin', adminPassword);
    const { ws } = await mountMemory(randomBytes(64 * 1024), { 'X-Auth-Token': login.token });
    const closing = closeOf(ws);
    // Another login session of the same user ending leaves this relay alone.
    const other = await stack.server.login('admin', adminPassword);
    assert.equal((await stack.server.request('DELETE', other.location)).status, 204);
    await sleep(200);
    assert.equal(ws.readyState, ws.OPEN, 'a different session ended');

    assert.equal((await stack.server.request('DELETE', login.location)).status, 204);
    // The medium is unmounted first (NBD_CMD_DISC), so a peer that ends its NBD session on DISC may close
    // first, with 1000; one still there gets 1008 with the reason.
    const closed = await closing;
    if (closed.code !== 1000) assert.deepEqual(closed, { code: 1008, reason: 'the login session ended' });
    await slotFreed(stack, 'Slot_0');
  });

  test('EjectMedia through Redfish ends the session', async () => {
    const { ws } = await mountMemory(randomBytes(64 * 1024));
    const closing = closeOf(ws);
    const eject = await stack.server.request(
      'POST',
      '/redfish/v1/Managers/bmc/VirtualMedia/Slot_0/Actions/VirtualMedia.EjectMedia',
      { body: {} },
    );
    assert.equal(eject.status, 204, `EjectMedia: ${eject.status} ${eject.text}`);
    // Orderly: the service unmounted first (its NBD_CMD_DISC may let the peer close first), no 1001/1011.
    assert.equal((await closing).code, 1000);
    await slotFreed(stack, 'Slot_0');
  });
});
