import { once } from 'node:events';
import path from 'node:path';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import type { WebSocket } from 'ws';
import { MAX_MESSAGE_BYTES } from '../../contract/bridge.ts';
import { virtualMediaActionUri, virtualMediaMemberUri } from '../../contract/redfish.ts';
import { serveNbd } from '../../nbd/server/serve.ts';
import { NodeWebSocketConnection as WebSocketConnection } from '../../transport/node-websocket-connection.ts';
import { LocalFileDevice } from '../file-device.ts';
import { connectionOptions, connectionUsage, RedfishClient } from '../redfish-client.ts';

const MiB = 1024 * 1024;
const PROGRESS_INTERVAL_MS = 500;
/** NBD requests served at once: enough to keep a network link busy, bounded in memory. */
const MAX_IN_FLIGHT = 16;

/**
 * `vmedia mount <SlotId> <file> [--rw]`: headless Proxy mode. Finds the slot's WebSocket endpoint,
 * connects to it with a session token and serves the file as an NBD server until Ctrl-C (which ejects
 * the slot) or until the server ends the session (an eject elsewhere, a failed mount).
 */
export async function run(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { ...connectionOptions, rw: { type: 'boolean', default: false } },
  });
  const [slotId, file] = positionals;
  if (!slotId || !file || positionals.length > 2) {
    throw new Error(`usage: vmedia mount <SlotId> <file> [--rw] [${connectionUsage}]`);
  }
  const device = await LocalFileDevice.open(file, values.rw);
  const client = await RedfishClient.connect(values).catch(async (error) => {
    await device.close();
    throw error;
  });
  try {
    const member = await client.get(virtualMediaMemberUri(slotId));
    const endpoint: unknown = member?.Oem?.OpenBMC?.WebSocketEndpoint;
    if (typeof endpoint !== 'string' || !endpoint) throw new Error(`${slotId} is not a Proxy slot`);
    const ws = client.webSocket(endpoint);
    await opened(ws);
    await serve(ws, device, client, { slotId, file, endpoint });
  } finally {
    await device.close();
    await client.close();
  }
}

async function opened(ws: WebSocket): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('unexpected-response', (request, response) => {
      request.destroy();
      const reasons: Record<number, string> = {
        401: 'not authenticated',
        403: 'the user may not configure the manager',
        404: 'no such endpoint',
        409: 'the slot is in use',
      };
      reject(
        new Error(
          `the server refused the WebSocket: ${reasons[response.statusCode ?? 0] ?? response.statusCode}`,
        ),
      );
    });
    ws.once('error', reject);
  });
}

async function serve(
  ws: WebSocket,
  device: LocalFileDevice,
  client: RedfishClient,
  where: { slotId: string; file: string; endpoint: string },
): Promise<void> {
  const connection = new WebSocketConnection(ws);
  let served = 0;
  const serving = serveNbd(connection, () => device, {
    maxInFlight: MAX_IN_FLIGHT,
    // Bounded by what the bridge accepts per message times what is in flight.
    maxBufferedBytes: MAX_IN_FLIGHT * MAX_MESSAGE_BYTES * 4,
    onRequest: (request) => {
      if (request.type === 'read' || request.type === 'write') served += request.length;
    },
  });
  process.stderr.write(
    `vmedia mount: serving ${path.basename(where.file)} (${device.size} bytes, ` +
      `${device.readOnly ? 'read-only' : 'read-write'}) on ${where.slotId} via ${where.endpoint}; Ctrl-C ejects\n`,
  );
  const progress = startProgress(() => served);

  let interrupted = false;
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    progress.note('ejecting');
    // The eject ends the session on the server; closing the WebSocket afterwards covers a failed eject.
    void client
      .action(virtualMediaActionUri(where.slotId, 'EjectMedia'), {})
      .catch((error: Error) => process.stderr.write(`\nvmedia mount: eject failed: ${error.message}\n`))
      .finally(() => connection.close(1000, 'ejected by the user'));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const [end] = await Promise.all([connection.ended, serving.catch(() => undefined)]);
    progress.stop();
    process.stderr.write(
      `vmedia mount: ${where.slotId} released (${interrupted ? 'ejected' : end.reason || `code ${end.code}`}); served ${formatBytes(served)}\n`,
    );
    // 1011: the mount failed on the host side; anything else but a normal end is an error too.
    if (!interrupted && end.code !== 1000 && end.code !== 1001) {
      throw new Error(`the session ended with code ${end.code}: ${end.reason || 'no reason given'}`);
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    progress.stop();
    if (ws.readyState !== ws.CLOSED) await once(ws, 'close');
  }
}

interface Progress {
  note(state: string): void;
  stop(): void;
}

/** A one-line progress display on a terminal (bytes served, MiB/s); nothing when stderr is not one. */
function startProgress(served: () => number): Progress {
  if (!process.stderr.isTTY) return { note: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    { format: '{state} | {served} served | {rate} MiB/s', stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  let state = 'serving';
  let last = { at: Date.now(), bytes: 0 };
  bar.start(1, 0, { state, served: formatBytes(0), rate: '0.0' });
  const timer = setInterval(() => {
    const now = { at: Date.now(), bytes: served() };
    const rate = (now.bytes - last.bytes) / MiB / Math.max((now.at - last.at) / 1000, 0.001);
    last = now;
    bar.update(0, { state, served: formatBytes(now.bytes), rate: rate.toFixed(1) });
  }, PROGRESS_INTERVAL_MS);
  let stopped = false;
  return {
    note(next) {
      state = next;
    },
    stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      bar.stop();
    },
  };
}

function formatBytes(bytes: number): string {
  return bytes < MiB ? `${bytes} B` : `${(bytes / MiB).toFixed(1)} MiB`;
}
