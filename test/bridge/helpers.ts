import { execFile } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import type { ClientRequest, IncomingMessage } from 'node:http';
import path from 'node:path';
import { promisify } from 'node:util';
import { WebSocket } from 'ws';
import type { RelayLimits } from '../../src/bridge/relay.ts';
import type { VmStack } from '../helpers/virtual-media-stack.ts';
import { waitFor } from '../helpers/wait.ts';

const execFileAsync = promisify(execFile);

/**
 * What the relay may queue towards one side at worst, the bound the backpressure tests assert: pausing
 * a stream stops new reads, but what was already read is still delivered — at most one message in the
 * parser plus one socket read (64 KiB in Node).
 */
export function bufferBound(limits: RelayLimits): number {
  return limits.highWaterMark + limits.maxMessage + 64 * 1024;
}

/** An NBD tool on the host export, with a timeout so that a hang fails the test instead of stalling it. */
export function nbdTool(command: string, args: string[]) {
  return execFileAsync(command, args, { timeout: 60_000, maxBuffer: 64 * 1024 * 1024 });
}

/** What an NBD tool writes to stdout, as bytes (`nbdcopy URI -` reads the whole export). */
export async function nbdToolBytes(command: string, args: string[]): Promise<Buffer> {
  const { stdout } = await execFileAsync(command, args, {
    timeout: 60_000,
    maxBuffer: 256 * 1024 * 1024,
    encoding: 'buffer',
  });
  return stdout;
}

export function hostUri(stack: VmStack, slotId: string): string {
  return `nbd+unix:///?socket=${path.join(stack.harness.hostDir, `${slotId}.sock`)}`;
}

export type Upgrade = { ws: WebSocket; status: 101 } | { status: number; body: string };

/**
 * Asks the server to upgrade `endpoint` to a WebSocket: resolves with the open socket, or with the
 * HTTP status and body of a refusal (then nothing was upgraded, so no byte could flow).
 */
export function upgrade(
  stack: VmStack,
  endpoint: string,
  options: { headers?: Record<string, string>; protocols?: string[] } = {},
): Promise<Upgrade> {
  const ws = new WebSocket(new URL(endpoint, stack.server.url.replace(/^https/, 'wss')), options.protocols, {
    ca: stack.server.ca,
    headers: options.headers ?? {},
  });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, status: 101 }));
    ws.once('unexpected-response', (request: ClientRequest, response: IncomingMessage) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        body += chunk;
      });
      // The server must also drop the connection it refused to upgrade (not the client: we wait).
      const guard = setTimeout(() => {
        request.destroy();
        reject(new Error(`the server kept a refused upgrade's connection open (${response.statusCode})`));
      }, 5000);
      response.on('end', () => {
        const done = () => {
          clearTimeout(guard);
          resolve({ status: response.statusCode ?? 0, body });
        };
        const socket = request.socket!;
        if (socket.closed) done();
        else socket.once('close', done);
      });
    });
    ws.once('error', reject);
  });
}

export function opened(result: Upgrade): WebSocket {
  if (!('ws' in result)) throw new Error(`upgrade refused: ${result.status} ${result.body}`);
  return result.ws;
}

export async function closeOf(ws: WebSocket): Promise<{ code: number; reason: string }> {
  const [code, reason] =
    ws.readyState === ws.CLOSED ? [-1, Buffer.alloc(0)] : ((await once(ws, 'close')) as [number, Buffer]);
  return { code, reason: reason.toString() };
}

/** Waits until `value()` stops changing (sampled every 20 ms): the flow has stalled. */
export async function quiescent(value: () => number, samples = 5): Promise<void> {
  let last = value();
  let same = 0;
  while (same < samples) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    const now = value();
    same = now === last ? same + 1 : 0;
    last = now;
  }
}

/** The slot is free again: no session, no socket file, and the service reports it not active. */
export async function slotFreed(stack: VmStack, slotId: string, timeoutMs = 10_000): Promise<void> {
  const socket = stack.client.slot(slotId)!.socket;
  await waitFor(() => !stack.server.app.nbdBridge.has(slotId) && !fs.existsSync(socket), {
    what: `the bridge to release ${slotId}`,
    timeoutMs,
  });
  await waitFor(() => stack.client.slot(slotId)?.active === false, { what: `${slotId} to be Ready` });
}
