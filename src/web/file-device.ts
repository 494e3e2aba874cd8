import type { BlockDevice } from '../nbd/block-device.ts';
import { chunkSpans } from '../nbd/chunk-spans.ts';
import { ENOSPC } from '../nbd/constants.ts';
import { NbdRequestError } from '../nbd/errors.ts';

/** Writes are kept in chunks of this size: big enough to keep the map small, small enough to copy. */
export const OVERLAY_CHUNK = 64 * 1024;

export interface FileDeviceOptions {
  /** Accept writes into the in-memory overlay (the file itself is never modified). */
  writable?: boolean;
  /** Writes that would grow the overlay beyond this many bytes fail with ENOSPC. */
  maxOverlayBytes?: number;
}

/** What the device needs of a `Blob`; a `File` is one. */
export interface ByteSource {
  readonly size: number;
  slice(start: number, end: number): { arrayBuffer(): Promise<ArrayBuffer> };
}

/**
 * A block device over a `Blob` (a `File` the user chose). Reads use `Blob.slice().arrayBuffer()`, so
 * any number may be in flight and offsets are exact up to 2^53. When writable, writes land in a sparse
 * in-memory overlay of fixed-size chunks and reads return the overlay over the file: the browser offers
 * no way to write a chosen file in place, and the host must still see its own writes.
 */
export class FileDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly: boolean;
  private readonly maxOverlayBytes: number;
  /** Chunk index → the chunk's current content (file content with writes applied). */
  private readonly overlay = new Map<number, Uint8Array>();
  /** Chunks whose file content is being read before a partial write can be applied. */
  private readonly loading = new Map<number, Promise<Uint8Array>>();
  private overlayBytes = 0;

  constructor(
    private readonly blob: ByteSource,
    options: FileDeviceOptions = {},
  ) {
    this.size = blob.size;
    this.readOnly = !options.writable;
    this.maxOverlayBytes = options.maxOverlayBytes ?? 1024 ** 3;
  }

  /** Bytes of memory the overlay holds. */
  get overlaySize(): number {
    return this.overlayBytes;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const data = new Uint8Array(await this.blob.slice(offset, offset + length).arrayBuffer());
    if (this.overlay.size === 0) return data;
    for (const { index, chunkStart, from, to } of chunkSpans(offset, length, OVERLAY_CHUNK)) {
      const chunk = this.overlay.get(index);
      if (chunk) data.set(chunk.subarray(from - chunkStart, to - chunkStart), from - offset);
    }
    return data;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    for (const { index, chunkStart, from, to } of chunkSpans(offset, data.length, OVERLAY_CHUNK)) {
      const chunk = await this.chunk(index, to - from === this.chunkLength(index));
      chunk.set(data.subarray(from - offset, to - offset), from - chunkStart);
    }
  }

  /** The overlay chunk at `index`, created from the file's bytes unless the write covers all of it. */
  // Not async: the lookups and the claim of a new chunk must happen without yielding in between, or two
  // writes to the same chunk could both create it and one would be lost.
  private chunk(index: number, overwritten: boolean): Uint8Array | Promise<Uint8Array> {
    const existing = this.overlay.get(index) ?? this.loading.get(index);
    if (existing) return existing;
    const length = this.chunkLength(index);
    if (this.overlayBytes + length > this.maxOverlayBytes) {
      return Promise.reject(new NbdRequestError(ENOSPC, 'the in-memory write overlay is full'));
    }
    this.overlayBytes += length;
    if (overwritten) {
      const chunk = new Uint8Array(length);
      this.overlay.set(index, chunk);
      return chunk;
    }
    const start = index * OVERLAY_CHUNK;
    const load = this.blob
      .slice(start, start + length)
      .arrayBuffer()
      .then((buffer) => {
        const chunk = new Uint8Array(buffer);
        this.overlay.set(index, chunk);
        return chunk;
      })
      .catch((error: unknown) => {
        this.overlayBytes -= length;
        throw error;
      })
      .finally(() => this.loading.delete(index));
    this.loading.set(index, load);
    return load;
  }

  private chunkLength(index: number): number {
    return Math.min(OVERLAY_CHUNK, this.size - index * OVERLAY_CHUNK);
  }
}
