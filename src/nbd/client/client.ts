/**
 * NBD client: one export of an NBD server, as a `BlockDevice`. `connect` runs the handshake
 * (./handshake.ts); requests then go through the transmission phase (./transmission.ts). This class
 * checks them against what was negotiated: the range, read-only, and NBD_INFO_BLOCK_SIZE's constraints
 * (alignment refused, requests split at the maximum payload); FUA is sent when the server offers it,
 * else a write is followed by a flush. Sizes and offsets are exact up to 2^53 - 1 bytes. Not supported:
 * oldstyle servers, TLS, structured replies, block status, WRITE_ZEROES.
 */
import type { BlockDevice, BlockSizeConstraints } from '../block-device.ts';
import { ByteReader } from '../byte-reader.ts';
import type { NbdConnection } from '../connection.ts';
import {
  CMD_FLAG_FUA,
  CMD_FLUSH,
  CMD_READ,
  CMD_TRIM,
  CMD_WRITE,
  DEFAULT_MAX_PAYLOAD,
  EPERM,
  FLAG_READ_ONLY,
  FLAG_SEND_FLUSH,
  FLAG_SEND_FUA,
  FLAG_SEND_TRIM,
} from '../constants.ts';
import { NbdRequestError } from '../errors.ts';
import { listExports, type Negotiated, negotiate } from './handshake.ts';
import { ClientTransmission } from './transmission.ts';

export interface NbdClientOptions {
  /** Export to attach; '' (the default) is the server's default export. */
  exportName?: string;
  /** Requests outstanding at once; more wait in a queue. Default 16. */
  maxInFlight?: number;
}

/** Largest trim sent in one request (any power-of-two alignment divides it). */
const MAX_TRIM_CHUNK = 2 ** 30;

export class NbdClient implements BlockDevice {
  readonly size: number;
  readonly readOnly: boolean;
  readonly blockSize?: BlockSizeConstraints;
  readonly exportName: string;
  /** The server's transmission flags (NBD_FLAG_*). */
  readonly transmissionFlags: number;
  /** Settles when the session is over: with undefined after close(), with the reason otherwise. */
  readonly closed: Promise<Error | undefined>;

  private readonly transmission: ClientTransmission;
  private readonly maxRequest: number;
  private readonly alignment: number;

  private constructor(transmission: ClientTransmission, exportName: string, negotiated: Negotiated) {
    this.transmission = transmission;
    this.closed = transmission.closed;
    this.exportName = exportName;
    this.size = negotiated.size;
    this.transmissionFlags = negotiated.flags;
    this.readOnly = (negotiated.flags & FLAG_READ_ONLY) !== 0;
    if (negotiated.blockSize) this.blockSize = negotiated.blockSize;
    this.alignment = negotiated.blockSize?.minimum ?? 1;
    const maximum = Math.min(negotiated.blockSize?.maximum ?? DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_PAYLOAD);
    this.maxRequest = Math.max(this.alignment, maximum - (maximum % this.alignment));
  }

  /** Performs the handshake on `connection` and returns the attached export. */
  static async connect(connection: NbdConnection, options: NbdClientOptions = {}): Promise<NbdClient> {
    const reader = new ByteReader(connection);
    const exportName = options.exportName ?? '';
    try {
      const negotiated = await negotiate(connection, reader, exportName);
      const maxInFlight = Math.max(1, Math.floor(options.maxInFlight ?? 16));
      return new NbdClient(new ClientTransmission(connection, reader, maxInFlight), exportName, negotiated);
    } catch (error) {
      connection.close();
      throw error;
    }
  }

  /** Asks the server for its export names (NBD_OPT_LIST), then leaves with NBD_OPT_ABORT. */
  static async listExports(connection: NbdConnection): Promise<string[]> {
    try {
      return await listExports(connection, new ByteReader(connection));
    } finally {
      connection.close();
    }
  }

  get canFlush(): boolean {
    return (this.transmissionFlags & FLAG_SEND_FLUSH) !== 0;
  }

  get canFua(): boolean {
    return (this.transmissionFlags & FLAG_SEND_FUA) !== 0;
  }

  get canTrim(): boolean {
    return (this.transmissionFlags & FLAG_SEND_TRIM) !== 0;
  }

  /** Requests sent and not answered yet. */
  get inFlight(): number {
    return this.transmission.inFlight;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const pieces = await this.readPieces(offset, length);
    if (pieces.length === 1) return pieces[0]!;
    const joined = new Uint8Array(length);
    let done = 0;
    for (const piece of pieces) {
      joined.set(piece, done);
      done += piece.length;
    }
    return joined;
  }

  /** Reads as the payload arrived, in pieces (views of what the connection delivered, not copied). */
  async readPieces(offset: number, length: number): Promise<Uint8Array[]> {
    this.checkRange('read', offset, length);
    // The usual case, one request: its pieces as they are, without collecting and flattening.
    if (length > 0 && length <= this.maxRequest) {
      return (await this.transmission.request(CMD_READ, 0, offset, length))!;
    }
    const parts: Promise<Uint8Array[] | undefined>[] = [];
    for (let done = 0; done < length; done += this.maxRequest) {
      parts.push(
        this.transmission.request(CMD_READ, 0, offset + done, Math.min(this.maxRequest, length - done)),
      );
    }
    return (await Promise.all(parts)).flatMap((pieces) => pieces!);
  }

  async write(offset: number, data: Uint8Array, options?: { fua?: boolean }): Promise<void> {
    if (this.readOnly) throw new NbdRequestError(EPERM, `export '${this.exportName}' is read-only`);
    this.checkRange('write', offset, data.length);
    const fua = options?.fua === true;
    const flags = fua && this.canFua ? CMD_FLAG_FUA : 0;
    const parts: Promise<unknown>[] = [];
    for (let done = 0; done < data.length; done += this.maxRequest) {
      const part = Math.min(this.maxRequest, data.length - done);
      parts.push(
        this.transmission.request(CMD_WRITE, flags, offset + done, part, data.subarray(done, done + part)),
      );
    }
    await Promise.all(parts);
    if (fua && !this.canFua) await this.flush();
  }

  async flush(): Promise<void> {
    if (!this.canFlush) return;
    await this.transmission.request(CMD_FLUSH, 0, 0, 0);
  }

  async trim(offset: number, length: number): Promise<void> {
    if (this.readOnly) throw new NbdRequestError(EPERM, `export '${this.exportName}' is read-only`);
    this.checkRange('trim', offset, length);
    if (!this.canTrim || length === 0) return;
    const parts: Promise<unknown>[] = [];
    for (let done = 0; done < length; done += MAX_TRIM_CHUNK) {
      parts.push(
        this.transmission.request(CMD_TRIM, 0, offset + done, Math.min(MAX_TRIM_CHUNK, length - done)),
      );
    }
    await Promise.all(parts);
  }

  /**
   * Waits for outstanding requests (at most `graceMs`, default 5000), sends NBD_CMD_DISC and closes the
   * connection; requests still outstanding after the grace period reject. Requests made after close()
   * reject at once.
   */
  close(options: { graceMs?: number } = {}): Promise<void> {
    return this.transmission.close(options.graceMs);
  }

  private checkRange(what: string, offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`${what}: offset ${offset} and length ${length} must be non-negative integers`);
    }
    if (offset > this.size || length > this.size - offset) {
      throw new RangeError(`${what} of ${length} bytes at ${offset} is beyond the export size ${this.size}`);
    }
    const a = this.alignment;
    if (a > 1 && (offset % a !== 0 || (length % a !== 0 && offset + length !== this.size))) {
      throw new RangeError(`${what} of ${length} bytes at ${offset} is not aligned to ${a} bytes`);
    }
  }
}
