import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { WebSocket, WebSocketServer } from 'ws';
import { CloseCode, Relay, type RelayLimits } from '../../src/bridge/relay.ts';
import { bufferBound, quiescent } from './helpers.ts';

// Small marks so that the bound is far below what the peers try to push.
const limits: RelayLimits = { highWaterMark: 256 * 1024, lowWaterMark: 64 * 1024, maxMessage: 128 * 1024 };
const TOTAL = 48 * 1024 * 1024;

let dir: string;
let wss: WebSocketServer;
let unixServer: net.Server;
let socketPath: string;
/** Every connection a test opened, destroyed at the end whatever the test's outcome. */
const hostSockets: net.Socket[] = [];

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-relay-'));
  socketPath = path.join(dir, 'relay.sock');
  wss = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: limits.maxMessage });
  await once(wss, 'listening');
  unixServer = net.createServer();
  unixServer.listen(socketPath);
  await once(unixServer, 'listening');
});

after(async () => {
  for (const socket of hostSockets) socket.destroy();
  for (const client of wss.clients) client.terminate();
  unixServer.close();
  await new Promise((resolve) => wss.close(resolve));
  await fs.rm(dir, { recursive: true, force: true });
});

interface Pair {
  relay: Relay;
  client: WebSocket;
  /** The host side's end of the Unix socket (the consumer). */
  host: net.Socket;
}

/** A WebSocket client ↔ relay ↔ Unix socket consumer, connected; `beforeAttach` runs before the socket. */
async function connectPair(beforeAttach?: (client: WebSocket) => Promise<void>): Promise<Pair> {
  const address = wss.address() as net.AddressInfo;
  const accepted = once(wss, 'connection') as Promise<[WebSocket]>;
  const client = new WebSocket(`ws://127.0.0.1:${address.port}/`);
  client.binaryType = 'nodebuffer';
  const [serverWs] = await accepted;
  const relay = new Relay(serverWs, limits);
  await once(client, 'open');
  await beforeAttach?.(client);
  const bridgeSide = once(unixServer, 'connection') as Promise<[net.Socket]>;
  const host = net.connect(socketPath);
  hostSockets.push(host);
  relay.attach((await bridgeSide)[0]);
  return { relay, client, host };
}

function sendAll(client: WebSocket, payload: Buffer, messageSize: number): void {
  for (let offset = 0; offset < payload.length; offset += messageSize) {
    client.send(payload.subarray(offset, offset + messageSize), { binary: true });
  }
}

/** Resolves once `socket` has closed (it may already have: then the event is gone). */
async function closed(socket: net.Socket): Promise<void> {
  socket.resume();
  if (!socket.closed) await once(socket, 'close');
}

/** Reads `length` bytes from `stream` (without ending it) and returns their sha256. */
function readExactly(stream: net.Socket, length: number): Promise<string> {
  const hash = createHash('sha256');
  let received = 0;
  return new Promise((resolve) => {
    const onData = (chunk: Buffer) => {
      hash.update(chunk);
      received += chunk.length;
      if (received < length) return;
      stream.off('data', onData);
      assert.equal(received, length);
      resolve(hash.digest('hex'));
    };
    stream.on('data', onData);
    stream.resume();
  });
}

test('what the WebSocket sends before the socket is attached is delivered first; the owner closes it after the host left', async () => {
  const greeting = Buffer.from('NBDMAGIC-greeting');
  const { relay, client, host } = await connectPair(async (c) => {
    c.send(greeting);
    await sleep(50);
  });
  const [first] = (await once(host, 'data')) as [Buffer];
  assert.deepEqual(first, greeting);
  host.destroy();
  const end = await relay.ended;
  assert.equal(end.by, 'socket');
  assert.equal(client.readyState, WebSocket.OPEN, 'the owner decides how the WebSocket closes');
  relay.close(CloseCode.InternalError, 'mount failed');
  const [code, reason] = await once(client, 'close');
  assert.equal(code, CloseCode.InternalError);
  assert.equal(String(reason), 'mount failed');
});

test('the messages one read of the WebSocket brings go to the socket in one write, so the host wakes once', async () => {
  const address = wss.address() as net.AddressInfo;
  const accepted = once(wss, 'connection') as Promise<[WebSocket]>;
  const client = new WebSocket(`ws://127.0.0.1:${address.port}/`);
  const [serverWs] = await accepted;
  const relay = new Relay(serverWs, limits);
  await once(client, 'open');
  const bridgeSide = once(unixServer, 'connection') as Promise<[net.Socket]>;
  const host = net.connect(socketPath);
  hostSockets.push(host);
  const [socket] = await bridgeSide;
  // What the stream hands the system: one entry per write or writev call, with its number of chunks.
  const calls: number[] = [];
  const stream = socket as unknown as {
    _write(chunk: Buffer, encoding: string, done: () => void): void;
    _writev(chunks: unknown[], done: () => void): void;
  };
  const write = stream._write.bind(socket);
  const writev = stream._writev.bind(socket);
  stream._write = (chunk, encoding, done) => {
    calls.push(1);
    write(chunk, encoding, done);
  };
  stream._writev = (chunks, done) => {
    calls.push(chunks.length);
    writev(chunks, done);
  };
  relay.attach(socket);
  // An NBD reply as the CLI sends it: the 16-byte header and the data, two messages in one tick.
  const header = randomBytes(16);
  const data = randomBytes(4096);
  client.send(header, { binary: true });
  client.send(data, { binary: true });
  const digest = await readExactly(host, header.length + data.length);
  assert.equal(digest, createHash('sha256').update(header).update(data).digest('hex'));
  assert.deepEqual(calls, [2]);
  client.terminate();
  await relay.ended;
});

test('a stalled host consumer stops the relay reading the WebSocket, within the bound', async () => {
  const { relay, client, host } = await connectPair();
  host.pause();
  const pauses: string[] = [];
  relay.on('pause', (side) => pauses.push(side));
  const payload = randomBytes(TOTAL);
  sendAll(client, payload, limits.maxMessage);

  await quiescent(() => client.bufferedAmount);
  const stalled = relay.stats();
  assert.ok(pauses.includes('websocket'), 'the relay paused the WebSocket');
  assert.equal(stalled.webSocketPaused, true);
  assert.ok(client.bufferedAmount > 0, 'the client could not send everything: the relay stopped reading');
  assert.ok(
    stalled.bytesToSocket < TOTAL / 2,
    `relayed ${stalled.bytesToSocket} bytes to a stalled consumer`,
  );
  assert.ok(stalled.socketBuffered <= bufferBound(limits), `queued ${stalled.socketBuffered}`);

  const digest = await readExactly(host, TOTAL);
  assert.equal(digest, createHash('sha256').update(payload).digest('hex'));
  const done = relay.stats();
  assert.equal(done.bytesToSocket, TOTAL);
  assert.ok(done.peakSocketBuffered <= bufferBound(limits), `peak ${done.peakSocketBuffered}`);
  assert.ok(done.peakSocketBuffered > limits.highWaterMark, 'the bound was actually approached');
  client.close();
  assert.equal((await relay.ended).by, 'websocket');
});

test('a stalled WebSocket reader stops the relay reading the socket, within the bound', async () => {
  const { relay, client, host } = await connectPair();
  client.pause();
  const payload = randomBytes(TOTAL);
  // In pieces, so that writableLength tells what the host could not hand over yet.
  for (let offset = 0; offset < TOTAL; offset += 64 * 1024)
    host.write(payload.subarray(offset, offset + 64 * 1024));

  await quiescent(() => host.writableLength);
  const stalled = relay.stats();
  assert.equal(stalled.socketPaused, true);
  assert.ok(host.writableLength > 0, 'the host could not write everything: the relay stopped reading');
  assert.ok(
    stalled.bytesToWebSocket < TOTAL / 2,
    `relayed ${stalled.bytesToWebSocket} bytes to a stalled reader`,
  );
  assert.ok(stalled.webSocketBuffered <= bufferBound(limits), `queued ${stalled.webSocketBuffered}`);

  const hash = createHash('sha256');
  let received = 0;
  const all = new Promise<void>((resolve) => {
    client.on('message', (data: Buffer) => {
      hash.update(data);
      received += data.length;
      if (received >= TOTAL) resolve();
    });
  });
  client.resume();
  await all;
  assert.equal(received, TOTAL);
  assert.equal(hash.digest('hex'), createHash('sha256').update(payload).digest('hex'));
  const done = relay.stats();
  assert.ok(done.peakWebSocketBuffered <= bufferBound(limits), `peak ${done.peakWebSocketBuffered}`);
  relay.close(CloseCode.Normal, 'done');
  const [code] = await once(client, 'close');
  assert.equal(code, CloseCode.Normal);
  await closed(host);
});

test('a text frame closes the connection with 1003 and ends the relay', async () => {
  const { relay, client, host } = await connectPair();
  client.send('hello');
  const [code] = await once(client, 'close');
  assert.equal(code, CloseCode.UnsupportedData);
  assert.equal((await relay.ended).code, CloseCode.UnsupportedData);
  await closed(host);
});
