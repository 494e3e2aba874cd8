import type { NbdConnection } from './connection.ts';
import { NbdDisconnectedError } from './errors.ts';

const EMPTY = new Uint8Array(0);

/**
 * Exact-length reads on top of a chunked `NbdConnection`. A message that lies within one received
 * chunk is returned as a view of that chunk (no copy); one that spans chunks is copied once, unless it
 * is asked for as pieces.
 */
export class ByteReader {
  private chunk: Uint8Array = EMPTY;
  private position = 0;
  private ended = false;

  constructor(private readonly connection: NbdConnection) {}

  /** Makes at least one byte available; false at the end of the stream. */
  private async fill(): Promise<boolean> {
    while (this.position >= this.chunk.length) {
      if (this.ended) return false;
      const next = await this.connection.read();
      if (next === null) {
        this.ended = true;
        this.chunk = EMPTY;
        this.position = 0;
        return false;
      }
      this.chunk = next;
      this.position = 0;
    }
    return true;
  }

  /**
   * The next `length` bytes, or `null` if the stream ends before the first of them. Throws
   * NbdDisconnectedError if it ends part-way. `what` names the message for that error.
   */
  async readOrEnd(length: number, what: string): Promise<Uint8Array | null> {
    if (length === 0) return EMPTY;
    if (!(await this.fill())) return null;
    return this.read(length, what);
  }

  /** The next `length` bytes; throws NbdDisconnectedError if the stream ends first. */
  async read(length: number, what: string): Promise<Uint8Array> {
    if (this.chunk.length - this.position >= length) {
      const view = this.chunk.subarray(this.position, this.position + length);
      this.position += length;
      return view;
    }
    const target = new Uint8Array(length);
    await this.readInto(target, 0, length, what);
    return target;
  }

  /**
   * The next `length` bytes as views of the received chunks, in order (no copy): for passing a payload
   * on as it came. Throws NbdDisconnectedError if the stream ends first.
   */
  async readPieces(length: number, what: string): Promise<Uint8Array[]> {
    const pieces: Uint8Array[] = [];
    let done = 0;
    while (done < length) {
      if (!(await this.fill())) {
        throw new NbdDisconnectedError(`connection closed after ${done} of ${length} bytes of ${what}`);
      }
      const take = Math.min(length - done, this.chunk.length - this.position);
      pieces.push(this.chunk.subarray(this.position, this.position + take));
      this.position += take;
      done += take;
    }
    return pieces;
  }

  /** Fills `target[offset, offset + length)` from the stream. */
  async readInto(target: Uint8Array, offset: number, length: number, what: string): Promise<void> {
    let done = 0;
    while (done < length) {
      if (!(await this.fill())) {
        throw new NbdDisconnectedError(`connection closed after ${done} of ${length} bytes of ${what}`);
      }
      const take = Math.min(length - done, this.chunk.length - this.position);
      target.set(this.chunk.subarray(this.position, this.position + take), offset + done);
      this.position += take;
      done += take;
    }
  }

  /** Consumes and drops `length` bytes without buffering them. */
  async skip(length: number, what: string): Promise<void> {
    let done = 0;
    while (done < length) {
      if (!(await this.fill())) {
        throw new NbdDisconnectedError(`connection closed after ${done} of ${length} bytes of ${what}`);
      }
      const take = Math.min(length - done, this.chunk.length - this.position);
      this.position += take;
      done += take;
    }
    if (this.position >= this.chunk.length) {
      // Let the consumed chunk be collected now rather than when the next one arrives.
      this.chunk = EMPTY;
      this.position = 0;
    }
  }
}
