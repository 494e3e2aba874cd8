/**
 * Shared pieces of the NBD tests: temp dirs, a Unix-socket server, a raw protocol peer. nbdkit is
 * started by ../helpers/nbdkit.ts.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { BlockDevice } from '../../src/nbd/block-device.ts';
import { ByteReader } from '../../src/nbd/byte-reader.ts';
import type { NbdConnection } from '../../src/nbd/connection.ts';
import { encodeInfoRequest } from '../../src/nbd/protocol.ts';
import { type ServeNbdOptions, serveNbd } from '../../src/nbd/server/serve.ts';
import { viewOf } from '../../src/nbd/wire.ts';
import { connectionFromSocket } from '../../src/transport/socket-connection.ts';

export async function tempDir(prefix = 'vmedia-nbd-'): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  await fs.chmod(dir, 0o700);
  return { dir, remove: () => fs.rm(dir, { recursive: true, force: true }) };
}

/** The promise's rejection reason, or null if it fulfilled: handles the rejection at once. */
export function settle(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => null,
    (error: unknown) => error,
  );
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function sha256File(file: string): Promise<string> {
  return sha256(await fs.readFile(file));
}

/** Deterministic pseudo-random bytes (xorshift), so failures are reproducible. */
export function patternBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a command; rejects with its stderr when it exits non-zero. */
export function run(command: string, args: string[], timeoutMs = 120_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) {
        reject(new Error(`${command} ${args.join(' ')} failed: ${error.message}\n${stderr}`));
      } else resolve({ stdout, stderr });
    });
  });
}

/** Runs a command and reports its exit code instead of failing. */
export function runStatus(
  command: string,
  args: string[],
  timeoutMs = 120_000,
): Promise<RunResult & { code: number }> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ stdout, stderr, code });
    });
  });
}

/** Our NBD server on a Unix socket (not the HTTPS TestServer of ../helpers/server.ts). */
export interface NbdTestServer {
  socket: string;
  /** `nbd+unix:///<name>?socket=…` */
  uri(exportName?: string): string;
  /** Every session's outcome so far: undefined for a clean end, the error otherwise. */
  outcomes: Promise<unknown>[];
  close(): Promise<void>;
}

/** Our server on a Unix socket in `dir`, one session per connection. */
export async function listenNbd(
  dir: string,
  resolveExport: (name: string) => BlockDevice | undefined | Promise<BlockDevice | undefined>,
  options: ServeNbdOptions = {},
): Promise<NbdTestServer> {
  const socket = path.join(dir, `server-${Math.random().toString(36).slice(2)}.sock`);
  const outcomes: Promise<unknown>[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.once('close', () => sockets.delete(client));
    outcomes.push(
      serveNbd(connectionFromSocket(client), resolveExport, options).then(
        () => undefined,
        (error: unknown) => error,
      ),
    );
  });
  server.listen(socket);
  await once(server, 'listening');
  return {
    socket,
    uri: (exportName = '') => `nbd+unix:///${encodeURIComponent(exportName)}?socket=${socket}`,
    outcomes,
    async close() {
      for (const client of sockets) client.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.all(outcomes);
    },
  };
}

/** A hand-driven protocol peer for raw tests: write exact bytes, read exact bytes. */
export class RawPeer {
  readonly reader: ByteReader;

  constructor(readonly connection: NbdConnection) {
    this.reader = new ByteReader(connection);
  }

  send(...parts: Uint8Array[]): Promise<void> {
    const total = parts.reduce((n, p) => n + p.length, 0);
    const all = new Uint8Array(total);
    let at = 0;
    for (const part of parts) {
      all.set(part, at);
      at += part.length;
    }
    return this.connection.write(all);
  }

  /** Exactly `n` bytes, or throws if the stream ends. */
  async take(n: number): Promise<Uint8Array> {
    return (await this.reader.read(n, 'test data')).slice();
  }

  /** True when the stream ends without more data. */
  async atEnd(): Promise<boolean> {
    return (await this.reader.readOrEnd(1, 'test data')) === null;
  }

  /** Reads the server greeting and answers with client flags. */
  async greet(clientFlags = 3): Promise<{ magic: bigint; opt: bigint; flags: number }> {
    const hello = viewOf(await this.take(18));
    await this.send(u32(clientFlags));
    return { magic: hello.getBigUint64(0), opt: hello.getBigUint64(8), flags: hello.getUint16(16) };
  }

  sendOption(option: number, data: Uint8Array = new Uint8Array(0)): Promise<void> {
    const header = new Uint8Array(16);
    const view = viewOf(header);
    view.setBigUint64(0, 0x49484156454f5054n);
    view.setUint32(8, option);
    view.setUint32(12, data.length);
    return this.send(header, data);
  }

  async optionReply(): Promise<{ magic: bigint; option: number; type: number; data: Uint8Array }> {
    const header = viewOf(await this.take(20));
    const length = header.getUint32(16);
    return {
      magic: header.getBigUint64(0),
      option: header.getUint32(8),
      type: header.getUint32(12),
      data: await this.take(length),
    };
  }

  sendRequest(
    type: number,
    offset: bigint | number,
    length: number,
    handle: bigint,
    flags = 0,
    payload?: Uint8Array,
  ): Promise<void> {
    const header = new Uint8Array(28);
    const view = viewOf(header);
    view.setUint32(0, 0x25609513);
    view.setUint16(4, flags);
    view.setUint16(6, type);
    view.setBigUint64(8, handle);
    view.setBigUint64(16, BigInt(offset));
    view.setUint32(24, length);
    return payload ? this.send(header, payload) : this.send(header);
  }

  async simpleReply(): Promise<{ magic: number; error: number; handle: bigint }> {
    const view = viewOf(await this.take(16));
    return { magic: view.getUint32(0), error: view.getUint32(4), handle: view.getBigUint64(8) };
  }
}

export function u32(value: number): Uint8Array {
  const bytes = new Uint8Array(4);
  viewOf(bytes).setUint32(0, value);
  return bytes;
}

export function u16(value: number): Uint8Array {
  const bytes = new Uint8Array(2);
  viewOf(bytes).setUint16(0, value);
  return bytes;
}

/** NBD_OPT_GO / NBD_OPT_INFO data: name, then the information requests. */
export function goData(name: string, infos: number[] = []): Uint8Array {
  return encodeInfoRequest(name, infos);
}

/**
 * Wraps a device so that reads complete in reverse order of arrival: reads are held until `batch` of
 * them wait (or `idleMs` passes without a new one), then released last-first.
 */
export class ReverseOrderDevice implements BlockDevice {
  readonly arrivals: number[] = [];
  readonly completions: number[] = [];
  private held: Array<() => void> = [];
  private timer: ReturnType<typeof setTimeout> | undefined;
  private sequence = 0;

  constructor(
    private readonly inner: BlockDevice,
    private readonly batch = 4,
    private readonly idleMs = 20,
  ) {}

  get size(): number {
    return this.inner.size;
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  get blockSize() {
    return this.inner.blockSize;
  }

  /** Pairs of reads that completed in the opposite order to the one they arrived in. */
  get reorderedPairs(): number {
    let count = 0;
    const c = this.completions;
    for (let i = 1; i < c.length; i++) if (c[i]! < c[i - 1]!) count++;
    return count;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const id = this.sequence++;
    this.arrivals.push(id);
    await new Promise<void>((resolve) => {
      this.held.push(resolve);
      if (this.held.length >= this.batch) this.release();
      else {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.release(), this.idleMs);
      }
    });
    this.completions.push(id);
    return this.inner.read(offset, length);
  }

  write(offset: number, data: Uint8Array, options?: { fua?: boolean }): Promise<void> {
    return this.inner.write!(offset, data, options);
  }

  private release(): void {
    clearTimeout(this.timer);
    const held = this.held.reverse();
    this.held = [];
    for (const resolve of held) resolve();
  }
}
