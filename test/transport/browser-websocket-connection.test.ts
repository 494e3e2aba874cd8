import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { openAsBlob } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { createWebSocketStream, WebSocket, WebSocketServer } from 'ws';
import { PEER_HIGH_WATER_MARK, PEER_MAX_MESSAGE_BYTES } from '../../src/contract/bridge.ts';
import { serveNbd } from '../../src/nbd/server/serve.ts';
import { BrowserWebSocketConnection } from '../../src/transport/browser-websocket-connection.ts';
import { FileDevice } from '../../src/web/file-device.ts';

const execFileAsync = promisify(execFile);
/** A hung NBD tool fails the test instead of hanging it. */
const run = (command: string, args: string[]) => execFileAsync(command, args, { timeout: 60_000 });
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

/** The `ws` client has the browser WebSocket's shape (binaryType, bufferedAmount, on* handlers). */
function asBrowserSocket(socket: WebSocket): globalThis.WebSocket {
  return socket as unknown as globalThis.WebSocket;
}

/**
 * A WebSocket "page" (the adapter serving a file with the NBD server, as the browser does) behind a
 * minimal bridge: the server end of the WebSocket is spliced to whatever NBD client connects to a Unix
 * socket. Real NBD clients (nbdcopy, nbdinfo, qemu-io) then exercise the adapter end to end.
 */
async function servePage(dir: string, device: FileDevice) {
  // Like the bridge, refuse messages over the adapter's limit (ws closes with 1009).
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: PEER_MAX_MESSAGE_BYTES });
  await once(wss, 'listening');
  const socketPath = path.join(dir, `page-${randomBytes(4).toString('hex')}.sock`);
  const bridge = net.createServer();
  wss.on('connection', (ws) => {
    // The stream is made at once so that it buffers the NBD greeting until the client connects.
    const stream = createWebSocketStream(ws);
    bridge.once('connection', (client) => {
      void pipeline(client, stream, client).catch(() => {});
    });
  });
  bridge.listen(socketPath);
  await once(bridge, 'listening');
  const { port } = wss.address() as net.AddressInfo;
  const socket = new WebSocket(`ws://127.0.0.1:${port}/`);
  const connection = new BrowserWebSocketConnection(asBrowserSocket(socket));
  await once(socket, 'open');
  const served = serveNbd(connection, () => device, { maxInFlight: 16 });
  return {
    uri: `nbd+unix:///?socket=${socketPath}`,
    served,
    async close() {
      connection.close();
      await served.catch(() => {});
      bridge.close();
      for (const client of wss.clients) client.terminate();
      await new Promise((resolve) => wss.close(resolve));
    },
  };
}

describe('BrowserWebSocketConnection', () => {
  let dir: string;
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-ws-connection-'));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('nbdinfo and nbdcopy read a file served over the WebSocket byte for byte', async () => {
    const image = path.join(dir, 'read.img');
    const content = randomBytes(3 * 1024 * 1024 + 4567);
    await fs.writeFile(image, content);
    // serveNbd serves one client per connection, so each NBD client gets its own page.
    const first = await servePage(dir, new FileDevice(await openAsBlob(image)));
    try {
      const { stdout } = await run('nbdinfo', ['--json', first.uri]);
      const info = JSON.parse(stdout) as { exports: { 'export-size': number; is_read_only: boolean }[] };
      assert.equal(info.exports[0]?.['export-size'], content.length);
      assert.equal(info.exports[0]?.is_read_only, true);
    } finally {
      await first.close();
    }
    const second = await servePage(dir, new FileDevice(await openAsBlob(image)));
    try {
      const copy = path.join(dir, 'read.copy');
      // 4 MiB requests: each reply spans several WebSocket messages.
      await run('nbdcopy', ['--requests=8', '--request-size=4194304', second.uri, copy]);
      assert.equal(sha256(await fs.readFile(copy)), sha256(content));
    } finally {
      await second.close();
    }
  });

  test('writes by qemu-io land in the overlay and read back; the file is untouched', async () => {
    const image = path.join(dir, 'rw.img');
    const content = randomBytes(1024 * 1024);
    await fs.writeFile(image, content);
    const device = new FileDevice(await openAsBlob(image), { writable: true });
    const page = await servePage(dir, device);
    try {
      const { stdout } = await run('qemu-io', [
        '-f',
        'raw',
        '-c',
        'write -P 0xab 4095 70000',
        '-c',
        'read -P 0xab 4095 70000',
        '-c',
        'read -v 4090 8',
        page.uri,
      ]);
      assert.doesNotMatch(stdout, /Pattern verification failed|error/i);
      const expected = Buffer.from(content);
      expected.fill(0xab, 4095, 4095 + 70000);
      assert.deepEqual(Buffer.from(await device.read(0, content.length)), expected);
      assert.deepEqual(await fs.readFile(image), content);
    } finally {
      await page.close();
    }
  });

  test('a text frame ends the stream and closes with 1003', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(wss, 'listening');
    wss.on('connection', (ws) => {
      ws.send(Buffer.from([1, 2, 3]));
      ws.once('message', () => ws.send('not binary'));
    });
    const socket = new WebSocket(`ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}/`);
    // Made before the socket opens, as the page does: the server may send at once.
    const connection = new BrowserWebSocketConnection(asBrowserSocket(socket));
    await once(socket, 'open');
    try {
      assert.deepEqual(await connection.read(), new Uint8Array([1, 2, 3]));
      await connection.write(new Uint8Array([4]));
      assert.equal(await connection.read(), null);
      assert.equal((await connection.ended).code, 1003);
      await assert.rejects(connection.write(new Uint8Array(1)));
    } finally {
      for (const client of wss.clients) client.terminate();
      await new Promise((resolve) => wss.close(resolve));
    }
  });

  test('write() waits while the socket buffer is over the mark, and resolves once it drains', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(wss, 'listening');
    const accepted = once(wss, 'connection');
    const socket = new WebSocket(`ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}/`);
    await once(socket, 'open');
    const [server] = (await accepted) as [WebSocket];
    const connection = new BrowserWebSocketConnection(asBrowserSocket(socket));
    try {
      server.pause(); // the peer stops reading, so what we send piles up on our side
      let bufferedWhenResolved = -1;
      const writing = connection.write(new Uint8Array(32 * 1024 * 1024)).then(() => {
        bufferedWhenResolved = socket.bufferedAmount;
      });
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.ok(socket.bufferedAmount > PEER_HIGH_WATER_MARK, `buffered ${socket.bufferedAmount}`);
      assert.equal(bufferedWhenResolved, -1, 'write() resolved while the buffer was over the mark');
      server.resume();
      await writing;
      assert.ok(
        bufferedWhenResolved <= PEER_HIGH_WATER_MARK,
        `resolved with ${bufferedWhenResolved} buffered`,
      );
    } finally {
      connection.close();
      for (const client of wss.clients) client.terminate();
      await new Promise((resolve) => wss.close(resolve));
    }
  });
});
