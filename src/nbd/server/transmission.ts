/**
 * The server's transmission phase (proto.md "Transmission"): requests on the chosen export until
 * NBD_CMD_DISC, the end of the stream or the session's end.
 *
 * Simple replies only: READ, WRITE (with FUA), FLUSH, TRIM and DISC; anything else is answered EINVAL.
 * Requests are processed concurrently, up to `maxInFlight` at a time and `maxBufferedBytes` of payload,
 * and replies go out as they complete (out of order); at either limit the connection is not read, so
 * memory stays bounded. Errors follow proto.md: out-of-range read or trim → EINVAL, out-of-range write →
 * ENOSPC, write or trim on a read-only export → EPERM, a read or write longer than the maximum payload
 * (32 MiB unless the device says otherwise) → EINVAL with a write's payload discarded as it streams in,
 * a backend exception → EIO (or the NbdRequestError's value) with the connection kept. Offsets are
 * 64-bit on the wire and exact up to 2^53 - 1. Not supported: structured replies, block status,
 * WRITE_ZEROES, CACHE, extended headers, multi-connection consistency (NBD_FLAG_CAN_MULTI_CONN is never
 * set).
 */
import type { BlockDevice } from '../block-device.ts';
import type { ByteReader } from '../byte-reader.ts';
import {
  CMD_DISC,
  CMD_FLAG_FUA,
  CMD_FLUSH,
  CMD_READ,
  CMD_TRIM,
  CMD_WRITE,
  commandName,
  EINVAL,
  EIO,
  ENOSPC,
  EPERM,
  ESHUTDOWN,
  REQUEST_MAGIC,
} from '../constants.ts';
import { errnoOf, NbdProtocolError, NbdRequestError } from '../errors.ts';
import {
  decodeRequest,
  encodeSimpleReply,
  REQUEST_HEADER_SIZE,
  type RequestHeader,
  requestHeader,
} from '../protocol.ts';
import { describeBytes } from '../wire.ts';
import type { Export } from './handshake.ts';

export type NbdRequestType = 'read' | 'write' | 'flush' | 'trim';

export interface NbdRequestInfo {
  type: NbdRequestType;
  offset: number;
  length: number;
}

export interface TransmissionOptions {
  /** Requests processed at once; the connection is not read while this many are outstanding. Default 16. */
  maxInFlight?: number;
  /**
   * Read and write payload bytes held by outstanding requests; the connection is not read while over it
   * (one request is always admitted, however large). Default 64 MiB.
   */
  maxBufferedBytes?: number;
  /** Called for each valid read, write, flush and trim as it is accepted (for statistics, inactivity). */
  onRequest?: (request: NbdRequestInfo) => void;
  /** Called when the backend fails a request (the client gets an error reply and the session goes on). */
  onError?: (error: unknown, request: NbdRequestInfo) => void;
}

/** What transmission needs of the session around it. */
export interface TransmissionSession {
  readonly reader: ByteReader;
  /** Sends to the client; rejects once the session is closed. */
  write(data: Uint8Array): Promise<void>;
  /** The session is ending: no new request reaches the device, each is answered ESHUTDOWN. */
  readonly aborting: boolean;
  /** The transport failed or was closed: stop reading. */
  readonly closed: boolean;
  close(): void;
}

const DEFAULT_MAX_IN_FLIGHT = 16;
const DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024;

export class ServerTransmission {
  private readonly maxInFlight: number;
  private readonly maxBufferedBytes: number;
  /** The header being decoded: one object for the session, not one per request. */
  private readonly header: RequestHeader = requestHeader();
  private inFlight = 0;
  private bufferedBytes = 0;
  private changed: Promise<void>;
  private notifyChanged!: () => void;
  private writeChain: Promise<void> = Promise.resolve();

  constructor(
    private readonly session: TransmissionSession,
    private readonly chosen: Export,
    private readonly options: TransmissionOptions,
  ) {
    this.maxInFlight = Math.max(1, Math.floor(options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT));
    this.maxBufferedBytes = Math.max(0, options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES);
    this.changed = new Promise((resolve) => {
      this.notifyChanged = resolve;
    });
  }

  /** Resolves once no request is being processed. */
  idle(): Promise<void> {
    return this.waitUntil(() => this.inFlight === 0);
  }

  /** Reads and dispatches requests until the client disconnects or the session ends; then waits for idle. */
  async run(): Promise<void> {
    const { session } = this;
    const { device } = this.chosen;
    for (;;) {
      await this.waitUntil(() => this.inFlight < this.maxInFlight);
      if (session.aborting || session.closed) break;
      const bytes = await session.reader.readOrEnd(REQUEST_HEADER_SIZE, 'request header');
      if (!bytes) break;
      const { magic, flags, type, handleHigh, handleLow, offset, length } = decodeRequest(bytes, this.header);
      if (magic !== REQUEST_MAGIC) {
        throw new NbdProtocolError(`expected a request (0x25609513), got ${describeBytes(bytes)}`);
      }

      if (type === CMD_DISC) break;

      let errno = session.aborting ? ESHUTDOWN : this.validate(type, flags, offset, length);
      const payloadBytes = errno === 0 && (type === CMD_READ || type === CMD_WRITE) ? length : 0;
      if (payloadBytes > 0) {
        await this.waitUntil(
          () => this.inFlight === 0 || this.bufferedBytes + payloadBytes <= this.maxBufferedBytes,
        );
      }
      let payload: Uint8Array | undefined;
      if (type === CMD_WRITE) {
        if (errno === 0) payload = await session.reader.read(length, 'write payload');
        else await session.reader.skip(length, 'write payload');
      }
      if (errno === 0 && session.aborting) errno = ESHUTDOWN;
      const request: NbdRequestInfo | undefined =
        errno === 0 ? { type: commandName(type) as NbdRequestType, offset, length } : undefined;
      if (request && this.options.onRequest) {
        try {
          this.options.onRequest(request);
        } catch {
          // An observer's failure is not the client's problem.
        }
      }

      this.inFlight++;
      this.bufferedBytes += payloadBytes;
      void this.process(device, type, flags, request, payload, errno, handleHigh, handleLow).finally(() => {
        this.inFlight--;
        this.bufferedBytes -= payloadBytes;
        this.signalChange();
      });
    }
    await this.idle();
  }

  private signalChange(): void {
    const notify = this.notifyChanged;
    this.changed = new Promise((resolve) => {
      this.notifyChanged = resolve;
    });
    notify();
  }

  private async waitUntil(condition: () => boolean): Promise<void> {
    while (!condition()) await this.changed;
  }

  /** The NBD error value a request gets before it reaches the device, or 0. */
  private validate(type: number, flags: number, offset: number, length: number): number {
    if (type !== CMD_READ && type !== CMD_WRITE && type !== CMD_FLUSH && type !== CMD_TRIM) return EINVAL;
    if (flags & ~CMD_FLAG_FUA) return EINVAL;
    if (type === CMD_FLUSH) return 0;
    const { device, blockSize } = this.chosen;
    if (type !== CMD_READ && device.readOnly) return EPERM;
    const outOfRange = type === CMD_WRITE ? ENOSPC : EINVAL;
    if (offset < 0 || offset > device.size || length > device.size - offset) return outOfRange;
    if (type !== CMD_TRIM && length > blockSize.maximum) return EINVAL;
    const min = blockSize.minimum;
    if (min > 1 && (offset % min !== 0 || (length % min !== 0 && offset + length !== device.size))) {
      return EINVAL;
    }
    return 0;
  }

  private async process(
    device: BlockDevice,
    type: number,
    flags: number,
    request: NbdRequestInfo | undefined,
    payload: Uint8Array | undefined,
    presetErrno: number,
    handleHigh: number,
    handleLow: number,
  ): Promise<void> {
    let errno = presetErrno;
    let data: Uint8Array[] | undefined;
    if (errno === 0 && request) {
      try {
        data = await perform(device, type, flags, request, payload);
      } catch (error) {
        errno = errnoOf(error);
        if (this.options.onError) {
          try {
            this.options.onError(error, request);
          } catch {
            // ignore
          }
        }
      }
    }
    // `data` is only ever set by a request that succeeded.
    await this.reply(handleHigh, handleLow, errno, data).catch(() => {
      // The client is gone or the transport broke: nothing more can be said to it.
      this.session.close();
    });
  }

  /** Sends a simple reply; replies are serialised so that a header and its data stay together. */
  private reply(handleHigh: number, handleLow: number, errno: number, data?: Uint8Array[]): Promise<void> {
    const header = encodeSimpleReply(errno, handleHigh, handleLow);
    const send = this.writeChain.then(async () => {
      await this.session.write(header);
      for (const piece of data ?? []) if (piece.length > 0) await this.session.write(piece);
    });
    this.writeChain = send.catch(() => undefined);
    return send;
  }
}

/** Runs a validated request on the device; a read resolves with its data as pieces. */
async function perform(
  device: BlockDevice,
  type: number,
  flags: number,
  { offset, length }: NbdRequestInfo,
  payload: Uint8Array | undefined,
): Promise<Uint8Array[] | undefined> {
  const fua = (flags & CMD_FLAG_FUA) !== 0;
  switch (type) {
    case CMD_READ: {
      if (length === 0) return undefined;
      const pieces = device.readPieces
        ? await device.readPieces(offset, length)
        : [await device.read(offset, length)];
      let total = 0;
      for (const piece of pieces) {
        if (!(piece instanceof Uint8Array)) {
          throw new NbdRequestError(EIO, `backend returned ${typeof piece} for a ${length}-byte read`);
        }
        total += piece.length;
      }
      if (total !== length) {
        throw new NbdRequestError(EIO, `backend returned ${total} bytes for a ${length}-byte read`);
      }
      return pieces;
    }
    case CMD_WRITE:
      if (length > 0 || fua) await device.write!(offset, payload!, fua ? { fua } : undefined);
      return undefined;
    case CMD_FLUSH:
      await device.flush?.();
      return undefined;
    default: // CMD_TRIM
      if (length > 0) await device.trim?.(offset, length);
      if (fua) await device.flush?.();
      return undefined;
  }
}
