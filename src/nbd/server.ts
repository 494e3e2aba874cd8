/**
 * NBD server: serves one client connection from a `BlockDevice` chosen by export name.
 *
 * Supported: the fixed-newstyle handshake (NBD_FLAG_FIXED_NEWSTYLE and NBD_FLAG_NO_ZEROES offered, the
 * client's NO_ZEROES honoured, unknown client flags refused); the options NBD_OPT_GO and NBD_OPT_INFO
 * (replying NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE, plus NBD_INFO_NAME when asked; NBD_REP_ERR_UNKNOWN
 * for an unknown export), NBD_OPT_EXPORT_NAME, NBD_OPT_LIST (NBD_REP_ERR_POLICY unless `listExports`
 * is given) and NBD_OPT_ABORT; every other option (STARTTLS, STRUCTURED_REPLY, meta contexts, …) gets
 * NBD_REP_ERR_UNSUP and negotiation continues. Transmission uses simple replies only: READ, WRITE (with
 * FUA), FLUSH, TRIM and DISC; anything else is answered EINVAL. Requests are processed concurrently, up
 * to `maxInFlight` at a time and `maxBufferedBytes` of payload, and replies go out as they complete
 * (out of order); at either limit the server stops reading the connection, so memory stays bounded.
 * Errors follow proto.md: out-of-range read or trim → EINVAL, out-of-range write → ENOSPC, write or trim
 * on a read-only export → EPERM, a read or write longer than the maximum payload (32 MiB unless the
 * device says otherwise) → EINVAL with a write's payload discarded as it streams in, a backend exception
 * → EIO (or the NbdRequestError's value) with the connection kept. Offsets are 64-bit on the wire and
 * exact up to 2^53 - 1. Not supported: TLS, structured replies, block status, WRITE_ZEROES, CACHE,
 * extended headers, multi-connection consistency (NBD_FLAG_CAN_MULTI_CONN is never set).
 */
import {
  type BlockDevice,
  type BlockSizeConstraints,
  checkBlockDevice,
  defaultBlockSize,
} from './block-device.ts';
import { ByteReader } from './byte-reader.ts';
import type { NbdConnection } from './connection.ts';
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
  ENOMEM,
  ENOSPC,
  EPERM,
  ESHUTDOWN,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_HAS_FLAGS,
  FLAG_NO_ZEROES,
  FLAG_READ_ONLY,
  FLAG_SEND_FLUSH,
  FLAG_SEND_FUA,
  FLAG_SEND_TRIM,
  IHAVEOPT,
  INFO_BLOCK_SIZE,
  INFO_EXPORT,
  INFO_NAME,
  MAX_STRING_LENGTH,
  NBDMAGIC,
  OPT_ABORT,
  OPT_EXPORT_NAME,
  OPT_GO,
  OPT_INFO,
  OPT_LIST,
  OPTION_HEADER_SIZE,
  OPTION_REPLY_HEADER_SIZE,
  OPTION_REPLY_MAGIC,
  optionName,
  REP_ACK,
  REP_ERR_INVALID,
  REP_ERR_POLICY,
  REP_ERR_SHUTDOWN,
  REP_ERR_TOO_BIG,
  REP_ERR_UNKNOWN,
  REP_ERR_UNSUP,
  REP_INFO,
  REP_SERVER,
  REQUEST_HEADER_SIZE,
  REQUEST_MAGIC,
  SIMPLE_REPLY_HEADER_SIZE,
  SIMPLE_REPLY_MAGIC,
} from './constants.ts';
import { NbdDisconnectedError, NbdError, NbdProtocolError, NbdRequestError } from './errors.ts';
import { decodeUtf8, describeBytes, encodeUtf8, u64ToSafeNumber, viewOf } from './wire.ts';

export type NbdRequestType = 'read' | 'write' | 'flush' | 'trim';

export interface NbdRequestInfo {
  type: NbdRequestType;
  offset: number;
  length: number;
}

export interface ServeNbdOptions {
  /** Requests processed at once; the connection is not read while this many are outstanding. Default 16. */
  maxInFlight?: number;
  /**
   * Read and write payload bytes held by outstanding requests; the connection is not read while over it
   * (one request is always admitted, however large). Default 64 MiB.
   */
  maxBufferedBytes?: number;
  /** Export names for NBD_OPT_LIST; without it listing is refused with NBD_REP_ERR_POLICY. */
  listExports?: () => string[] | Promise<string[]>;
  /** Called for each valid read, write, flush and trim as it is accepted (for statistics, inactivity). */
  onRequest?: (request: NbdRequestInfo) => void;
  /** Called when the backend fails a request (the client gets an error reply and the session goes on). */
  onError?: (error: unknown, request: NbdRequestInfo) => void;
  /**
   * Ends the session: during the handshake at once; during transmission the requests already being
   * processed are answered, later ones get ESHUTDOWN, then the connection is closed (after at most
   * `shutdownGraceMs`, default 5000). `serveNbd` then resolves.
   */
  signal?: AbortSignal;
  shutdownGraceMs?: number;
}

/** Option data we are willing to buffer: an export name (≤ 4096 bytes) plus framing and info requests. */
const MAX_OPTION_LENGTH = 3 * MAX_STRING_LENGTH;
const DEFAULT_MAX_IN_FLIGHT = 16;
const SUPPORTED_OPTIONS = new Set([OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO]);
const DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024;

/**
 * Runs the NBD protocol for one client on `connection`: handshake, then transmission against the block
 * device `resolveExport` returns for the requested export name ('' is the default export; `undefined`
 * means no such export). Resolves when the client disconnects (NBD_CMD_DISC, NBD_OPT_ABORT or end of
 * stream) or the session is aborted; rejects with an NbdError on a protocol violation or when the client
 * insists on an unknown export through NBD_OPT_EXPORT_NAME. The connection is closed in every case, and
 * the promise settles only after every backend call it started has settled.
 */
export function serveNbd(
  connection: NbdConnection,
  resolveExport: (name: string) => BlockDevice | undefined | Promise<BlockDevice | undefined>,
  options: ServeNbdOptions = {},
): Promise<void> {
  return new ServerSession(connection, resolveExport, options).run();
}

interface Export {
  name: string;
  device: BlockDevice;
  flags: number;
  /** The device's constraints, or the defaults: what NBD_INFO_BLOCK_SIZE announces and requests obey. */
  blockSize: BlockSizeConstraints;
}

class ServerSession {
  private readonly reader: ByteReader;
  private readonly maxInFlight: number;
  private readonly maxBufferedBytes: number;
  private inFlight = 0;
  private bufferedBytes = 0;
  private changed: Promise<void>;
  private notifyChanged!: () => void;
  private writeChain: Promise<void> = Promise.resolve();
  /** The transport failed or was closed by us: stop writing, stop reading. */
  private closed = false;
  private aborting = false;
  private transmitting = false;

  constructor(
    private readonly connection: NbdConnection,
    private readonly resolveExport: (
      name: string,
    ) => BlockDevice | undefined | Promise<BlockDevice | undefined>,
    private readonly options: ServeNbdOptions,
  ) {
    this.reader = new ByteReader(connection);
    this.maxInFlight = Math.max(1, Math.floor(options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT));
    this.maxBufferedBytes = Math.max(0, options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES);
    this.changed = new Promise((resolve) => {
      this.notifyChanged = resolve;
    });
  }

  async run(): Promise<void> {
    const { signal } = this.options;
    if (signal?.aborted) {
      this.close();
      return;
    }
    const onAbort = () => void this.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const chosen = await this.handshake();
      if (chosen) await this.transmission(chosen);
    } catch (error) {
      // Once we are shutting down or the transport broke under us, a short read is expected.
      if (!(error instanceof NbdDisconnectedError && (this.aborting || this.closed))) throw error;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.close();
      await this.waitUntil(() => this.inFlight === 0);
    }
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.connection.close();
  }

  private async abort(): Promise<void> {
    if (this.aborting) return;
    this.aborting = true;
    if (!this.transmitting) {
      this.close();
      return;
    }
    const grace = this.options.shutdownGraceMs ?? 5000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.waitUntil(() => this.inFlight === 0),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, grace);
      }),
    ]);
    clearTimeout(timer);
    this.close();
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

  private async write(data: Uint8Array): Promise<void> {
    if (this.closed) throw new NbdDisconnectedError('connection closed');
    await this.connection.write(data);
  }

  // ---- handshake -------------------------------------------------------------------------------

  /** Negotiates until the client picks an export (returned) or leaves (null). */
  private async handshake(): Promise<Export | null> {
    const hello = new Uint8Array(18);
    const helloView = viewOf(hello);
    helloView.setBigUint64(0, NBDMAGIC);
    helloView.setBigUint64(8, IHAVEOPT);
    helloView.setUint16(16, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    await this.write(hello);

    const clientFlagBytes = await this.reader.readOrEnd(4, 'client flags');
    if (!clientFlagBytes) return null;
    const clientFlags = viewOf(clientFlagBytes).getUint32(0);
    if (clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) {
      throw new NbdProtocolError(
        `client sent unknown handshake flags ${describeBytes(clientFlagBytes)}; is it an NBD client?`,
      );
    }
    const noZeroes = (clientFlags & FLAG_C_NO_ZEROES) !== 0;

    for (;;) {
      const header = await this.reader.readOrEnd(OPTION_HEADER_SIZE, 'option header');
      if (!header) return null;
      const view = viewOf(header);
      if (view.getBigUint64(0) !== IHAVEOPT) {
        throw new NbdProtocolError(`expected an option (IHAVEOPT), got ${describeBytes(header)}`);
      }
      const option = view.getUint32(8);
      const length = view.getUint32(12);
      if (!SUPPORTED_OPTIONS.has(option)) {
        await this.reader.skip(length, `${optionName(option)} data`);
        await this.optionReply(option, REP_ERR_UNSUP, `${optionName(option)} is not supported`);
        continue;
      }
      if (length > MAX_OPTION_LENGTH) {
        if (option === OPT_EXPORT_NAME) {
          throw new NbdProtocolError(`NBD_OPT_EXPORT_NAME with ${length} bytes of data`);
        }
        await this.reader.skip(length, `${optionName(option)} data`);
        await this.optionReply(option, REP_ERR_TOO_BIG, `${length} bytes of option data is too much`);
        continue;
      }
      const data = await this.reader.read(length, `${optionName(option)} data`);
      if (this.aborting) {
        if (option === OPT_EXPORT_NAME) return null;
        await this.optionReply(option, REP_ERR_SHUTDOWN, 'server is shutting down');
        continue;
      }

      switch (option) {
        case OPT_ABORT:
          await this.optionReply(option, REP_ACK).catch(() => undefined);
          return null;
        case OPT_LIST:
          await this.listExports(data);
          break;
        case OPT_EXPORT_NAME: {
          const name = decodeUtf8(data);
          const chosen = await this.lookUp(name);
          if (!chosen) {
            // The option cannot carry an error: the spec says to terminate the session.
            throw new NbdError(`client asked for unknown export '${name}' (NBD_OPT_EXPORT_NAME)`);
          }
          const reply = new Uint8Array(noZeroes ? 10 : 134);
          const replyView = viewOf(reply);
          replyView.setBigUint64(0, BigInt(chosen.device.size));
          replyView.setUint16(8, chosen.flags);
          await this.write(reply);
          return chosen;
        }
        default: {
          const chosen = await this.infoOrGo(option, data);
          if (chosen && option === OPT_GO) return chosen;
        }
      }
    }
  }

  private async lookUp(name: string): Promise<Export | undefined> {
    let device: BlockDevice | undefined;
    try {
      device = await this.resolveExport(name);
    } catch {
      return undefined;
    }
    if (!device) return undefined;
    checkBlockDevice(device);
    let flags = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH;
    if (device.readOnly) flags |= FLAG_READ_ONLY;
    else {
      flags |= FLAG_SEND_FUA;
      if (typeof device.trim === 'function') flags |= FLAG_SEND_TRIM;
    }
    return { name, device, flags, blockSize: device.blockSize ?? defaultBlockSize };
  }

  private async listExports(data: Uint8Array): Promise<void> {
    if (data.length !== 0) {
      await this.optionReply(OPT_LIST, REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
      return;
    }
    if (!this.options.listExports) {
      await this.optionReply(OPT_LIST, REP_ERR_POLICY, 'export listing is disabled');
      return;
    }
    let names: string[];
    try {
      names = await this.options.listExports();
    } catch {
      await this.optionReply(OPT_LIST, REP_ERR_POLICY, 'export list unavailable');
      return;
    }
    for (const name of names) {
      const encoded = encodeUtf8(name);
      const payload = new Uint8Array(4 + encoded.length);
      viewOf(payload).setUint32(0, encoded.length);
      payload.set(encoded, 4);
      await this.optionReply(OPT_LIST, REP_SERVER, payload);
    }
    await this.optionReply(OPT_LIST, REP_ACK);
  }

  /** NBD_OPT_INFO / NBD_OPT_GO; returns the export when the reply ended in NBD_REP_ACK. */
  private async infoOrGo(option: number, data: Uint8Array): Promise<Export | undefined> {
    const view = viewOf(data);
    const nameLength = data.length >= 6 ? view.getUint32(0) : -1;
    if (nameLength < 0 || nameLength > data.length - 6) {
      await this.optionReply(option, REP_ERR_INVALID, 'malformed option data');
      return undefined;
    }
    const name = decodeUtf8(data.subarray(4, 4 + nameLength));
    const count = view.getUint16(4 + nameLength);
    if (data.length !== 6 + nameLength + 2 * count) {
      await this.optionReply(option, REP_ERR_INVALID, 'information request list has the wrong length');
      return undefined;
    }
    const requested = new Set<number>();
    for (let i = 0; i < count; i++) requested.add(view.getUint16(6 + nameLength + 2 * i));

    const chosen = await this.lookUp(name);
    if (!chosen) {
      await this.optionReply(option, REP_ERR_UNKNOWN, `unknown export '${name}'`);
      return undefined;
    }
    const exportInfo = new Uint8Array(12);
    const exportView = viewOf(exportInfo);
    exportView.setUint16(0, INFO_EXPORT);
    exportView.setBigUint64(2, BigInt(chosen.device.size));
    exportView.setUint16(10, chosen.flags);
    await this.optionReply(option, REP_INFO, exportInfo);

    // Sent whether asked for or not (clients ignore what they did not ask for); a client that asked
    // has promised to honour it.
    const bs = chosen.blockSize;
    const sizeInfo = new Uint8Array(14);
    const sizeView = viewOf(sizeInfo);
    sizeView.setUint16(0, INFO_BLOCK_SIZE);
    sizeView.setUint32(2, bs.minimum);
    sizeView.setUint32(6, bs.preferred);
    sizeView.setUint32(10, bs.maximum);
    await this.optionReply(option, REP_INFO, sizeInfo);

    if (requested.has(INFO_NAME)) {
      const encoded = encodeUtf8(name);
      const nameInfo = new Uint8Array(2 + encoded.length);
      viewOf(nameInfo).setUint16(0, INFO_NAME);
      nameInfo.set(encoded, 2);
      await this.optionReply(option, REP_INFO, nameInfo);
    }
    await this.optionReply(option, REP_ACK);
    return chosen;
  }

  private async optionReply(option: number, type: number, payload?: Uint8Array | string): Promise<void> {
    const body = typeof payload === 'string' ? encodeUtf8(payload) : (payload ?? new Uint8Array(0));
    const message = new Uint8Array(OPTION_REPLY_HEADER_SIZE + body.length);
    const view = viewOf(message);
    view.setBigUint64(0, OPTION_REPLY_MAGIC);
    view.setUint32(8, option);
    view.setUint32(12, type);
    view.setUint32(16, body.length);
    message.set(body, OPTION_REPLY_HEADER_SIZE);
    await this.write(message);
  }

  // ---- transmission ----------------------------------------------------------------------------

  private async transmission(chosen: Export): Promise<void> {
    this.transmitting = true;
    const { device } = chosen;
    for (;;) {
      await this.waitUntil(() => this.inFlight < this.maxInFlight);
      if (this.aborting || this.closed) break;
      const header = await this.reader.readOrEnd(REQUEST_HEADER_SIZE, 'request header');
      if (!header) break;
      const view = viewOf(header);
      const magic = view.getUint32(0);
      if (magic !== REQUEST_MAGIC) {
        throw new NbdProtocolError(`expected a request (0x25609513), got ${describeBytes(header)}`);
      }
      const flags = view.getUint16(4);
      const type = view.getUint16(6);
      const handleHigh = view.getUint32(8);
      const handleLow = view.getUint32(12);
      const rawOffset = view.getBigUint64(16);
      const length = view.getUint32(24);

      if (type === CMD_DISC) break;

      const offset = u64ToSafeNumber(rawOffset) ?? -1;
      let errno = this.aborting ? ESHUTDOWN : this.validate(chosen, type, flags, offset, length);
      const payloadBytes = errno === 0 && (type === CMD_READ || type === CMD_WRITE) ? length : 0;
      if (payloadBytes > 0) {
        await this.waitUntil(
          () => this.inFlight === 0 || this.bufferedBytes + payloadBytes <= this.maxBufferedBytes,
        );
      }
      let payload: Uint8Array | undefined;
      if (type === CMD_WRITE) {
        if (errno === 0) payload = await this.reader.read(length, 'write payload');
        else await this.reader.skip(length, 'write payload');
      }
      if (errno === 0 && this.aborting) errno = ESHUTDOWN;
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
    await this.waitUntil(() => this.inFlight === 0);
  }

  /** The NBD error value a request gets before it reaches the device, or 0. */
  private validate(chosen: Export, type: number, flags: number, offset: number, length: number): number {
    if (type !== CMD_READ && type !== CMD_WRITE && type !== CMD_FLUSH && type !== CMD_TRIM) return EINVAL;
    if (flags & ~CMD_FLAG_FUA) return EINVAL;
    if (type === CMD_FLUSH) return 0;
    const { device } = chosen;
    if (type !== CMD_READ && device.readOnly) return EPERM;
    const outOfRange = type === CMD_WRITE ? ENOSPC : EINVAL;
    if (offset < 0 || offset > device.size || length > device.size - offset) return outOfRange;
    if (type !== CMD_TRIM && length > chosen.blockSize.maximum) return EINVAL;
    const min = chosen.blockSize.minimum;
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
        data = await this.perform(device, type, flags, request, payload);
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
      this.close();
    });
  }

  private async perform(
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

  /** Sends a simple reply; replies are serialised so that a header and its data stay together. */
  private reply(handleHigh: number, handleLow: number, errno: number, data?: Uint8Array[]): Promise<void> {
    const header = new Uint8Array(SIMPLE_REPLY_HEADER_SIZE);
    const view = viewOf(header);
    view.setUint32(0, SIMPLE_REPLY_MAGIC);
    view.setUint32(4, errno);
    view.setUint32(8, handleHigh);
    view.setUint32(12, handleLow);
    const send = this.writeChain.then(async () => {
      await this.write(header);
      for (const piece of data ?? []) if (piece.length > 0) await this.write(piece);
    });
    this.writeChain = send.catch(() => undefined);
    return send;
  }
}

/** The NBD error value for a backend failure. */
export function errnoOf(error: unknown): number {
  if (error instanceof NbdRequestError) return error.errno;
  const code = (error as { code?: unknown } | null)?.code;
  switch (code) {
    case 'EPERM':
    case 'EACCES':
    case 'EROFS':
      return EPERM;
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return ENOSPC;
    case 'EINVAL':
      return EINVAL;
    case 'ENOMEM':
      return ENOMEM;
    default:
      return EIO;
  }
}
