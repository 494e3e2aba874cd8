/**
 * In-memory NBD test doubles: a connected pair of `NbdConnection`s (a pipe with backpressure) and a
 * sparse `BlockDevice` held in RAM, for running a server and a client in the test process.
 */
import type { BlockDevice, BlockSizeConstraints } from '../../src/nbd/block-device.ts';
import { chunkSpans } from '../../src/nbd/chunk-spans.ts';
import type { NbdConnection } from '../../src/nbd/connection.ts';

class Pipe {
  private readonly chunks: Uint8Array[] = [];
  private bytes = 0;
  private ended = false;
  private readerWaiting: (() => void) | undefined;
  private writersWaiting: Array<() => void> = [];

  constructor(private readonly highWaterMark: number) {}

  async read(): Promise<Uint8Array | null> {
    for (;;) {
      const chunk = this.chunks.shift();
      if (chunk) {
        this.bytes -= chunk.length;
        if (this.bytes <= this.highWaterMark) this.wakeWriters();
        return chunk;
      }
      if (this.ended) return null;
      await new Promise<void>((resolve) => {
        this.readerWaiting = resolve;
      });
    }
  }

  async write(data: Uint8Array): Promise<void> {
    if (this.ended) throw new Error('connection is closed');
    if (data.length === 0) return;
    this.chunks.push(data);
    this.bytes += data.length;
    const wake = this.readerWaiting;
    this.readerWaiting = undefined;
    wake?.();
    while (this.bytes > this.highWaterMark && !this.ended) {
      await new Promise<void>((resolve) => this.writersWaiting.push(resolve));
    }
    if (this.ended && this.bytes > 0) throw new Error('connection closed while writing');
  }

  /** No more data will come; what is queued can still be read. */
  end(): void {
    this.ended = true;
    const wake = this.readerWaiting;
    this.readerWaiting = undefined;
    wake?.();
    this.wakeWriters();
  }

  /** The reading side is gone: drop what is queued. */
  discard(): void {
    this.chunks.length = 0;
    this.bytes = 0;
    this.end();
  }

  private wakeWriters(): void {
    const waiting = this.writersWaiting;
    this.writersWaiting = [];
    for (const wake of waiting) wake();
  }
}

/**
 * Two connected ends: what one writes the other reads. A writer waits while more than `highWaterMark`
 * bytes (default 256 KiB) are unread. Closing one end ends the other's input after what is queued and
 * makes its writes fail.
 */
export function createConnectionPair(
  options: { highWaterMark?: number } = {},
): [NbdConnection, NbdConnection] {
  const highWaterMark = options.highWaterMark ?? 256 * 1024;
  const aToB = new Pipe(highWaterMark);
  const bToA = new Pipe(highWaterMark);
  const end = (incoming: Pipe, outgoing: Pipe): NbdConnection => {
    let closed = false;
    return {
      read: () => (closed ? Promise.resolve(null) : incoming.read()),
      write: (data) => (closed ? Promise.reject(new Error('connection is closed')) : outgoing.write(data)),
      close: () => {
        if (closed) return;
        closed = true;
        outgoing.end();
        incoming.discard();
      },
    };
  };
  return [end(bToA, aToB), end(aToB, bToA)];
}

export interface MemoryBlockDeviceOptions {
  readOnly?: boolean;
  blockSize?: BlockSizeConstraints;
  /** Initial content from offset 0 (copied); the rest reads as zeroes. */
  data?: Uint8Array;
}

/** Bytes per stored chunk: only chunks that were written take memory. */
const CHUNK = 64 * 1024;

/**
 * A sparse block device in RAM: any size up to 2^53 - 1, unwritten areas read as zeroes, trim frees
 * whole chunks. Writes are checked against `readOnly` and the size.
 */
export class MemoryBlockDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly: boolean;
  readonly blockSize?: BlockSizeConstraints;
  private readonly chunks = new Map<number, Uint8Array>();

  constructor(size: number, options: MemoryBlockDeviceOptions = {}) {
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`invalid device size ${size}`);
    this.size = size;
    this.readOnly = options.readOnly ?? false;
    if (options.blockSize) this.blockSize = options.blockSize;
    if (options.data) this.store(0, options.data.subarray(0, size));
  }

  /** Bytes of memory held by written chunks. */
  get allocatedBytes(): number {
    return this.chunks.size * CHUNK;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    this.check(offset, length);
    return this.peek(offset, length);
  }

  /** Synchronous read, for tests. */
  peek(offset: number, length: number): Uint8Array {
    const result = new Uint8Array(length);
    for (const { index, chunkStart, from, to } of chunkSpans(offset, length, CHUNK)) {
      const chunk = this.chunks.get(index);
      if (chunk) result.set(chunk.subarray(from - chunkStart, to - chunkStart), from - offset);
    }
    return result;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.readOnly) throw Object.assign(new Error('device is read-only'), { code: 'EROFS' });
    this.check(offset, data.length);
    this.store(offset, data);
  }

  async flush(): Promise<void> {}

  async trim(offset: number, length: number): Promise<void> {
    if (this.readOnly) throw Object.assign(new Error('device is read-only'), { code: 'EROFS' });
    this.check(offset, length);
    for (const { index, chunkStart, from, to } of chunkSpans(offset, length, CHUNK)) {
      const chunk = this.chunks.get(index);
      if (!chunk) continue;
      if (to - from === CHUNK) this.chunks.delete(index);
      else chunk.fill(0, from - chunkStart, to - chunkStart);
    }
  }

  /** Writes without the read-only check (to prepare content). */
  store(offset: number, data: Uint8Array): void {
    this.check(offset, data.length);
    for (const { index, chunkStart, from, to } of chunkSpans(offset, data.length, CHUNK)) {
      let chunk = this.chunks.get(index);
      if (!chunk) {
        chunk = new Uint8Array(CHUNK);
        this.chunks.set(index, chunk);
      }
      chunk.set(data.subarray(from - offset, to - offset), from - chunkStart);
    }
  }

  private check(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || length < 0 || length > this.size - offset) {
      throw Object.assign(new RangeError(`${length} bytes at ${offset} is outside the device`), {
        code: 'EINVAL',
      });
    }
  }
}
