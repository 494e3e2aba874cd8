/**
 * NBD client: one export of an NBD server, as a `BlockDevice`.
 *
 * Supported: the fixed-newstyle handshake with NBD_OPT_GO (asking for NBD_INFO_BLOCK_SIZE, whose
 * constraints are then honoured: requests are checked for alignment and split at the maximum payload),
 * falling back to NBD_OPT_EXPORT_NAME when the server answers NBD_REP_ERR_UNSUP or only speaks plain
 * newstyle; NO_ZEROES when offered; NBD_OPT_LIST (`NbdClient.listExports`) and NBD_OPT_ABORT. Transmission
 * uses simple replies: READ, WRITE (FUA when the server offers it, else write then flush), FLUSH, TRIM and
 * DISC (also sent by itself when the server answers ESHUTDOWN), pipelined up to `maxInFlight` requests,
 * replies matched by handle in whatever order they come.
 * A server that sends garbage (bad magic, unknown handle, structured replies that were never negotiated)
 * or closes mid-reply fails every outstanding request with an NbdProtocolError / NbdDisconnectedError,
 * and `closed` reports why. Sizes and offsets are exact up to 2^53 - 1 bytes. Not supported: oldstyle
 * servers, TLS, structured replies, block status, WRITE_ZEROES.
 */
import type { BlockDevice, BlockSizeConstraints } from './block-device.ts';
import { ByteReader } from './byte-reader.ts';
import type { NbdConnection } from './connection.ts';
import {
  CLISERV_MAGIC,
  CMD_DISC,
  CMD_FLAG_FUA,
  CMD_FLUSH,
  CMD_READ,
  CMD_TRIM,
  CMD_WRITE,
  commandName,
  DEFAULT_MAX_PAYLOAD,
  EPERM,
  ESHUTDOWN,
  errorName,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  FLAG_READ_ONLY,
  FLAG_SEND_FLUSH,
  FLAG_SEND_FUA,
  FLAG_SEND_TRIM,
  IHAVEOPT,
  INFO_BLOCK_SIZE,
  INFO_EXPORT,
  NBDMAGIC,
  OPT_ABORT,
  OPT_EXPORT_NAME,
  OPT_GO,
  OPT_LIST,
  OPTION_HEADER_SIZE,
  OPTION_REPLY_HEADER_SIZE,
  OPTION_REPLY_MAGIC,
  optionName,
  REP_ACK,
  REP_ERR_UNSUP,
  REP_FLAG_ERROR,
  REP_INFO,
  REP_SERVER,
  REQUEST_HEADER_SIZE,
  REQUEST_MAGIC,
  replyName,
  SIMPLE_REPLY_HEADER_SIZE,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
} from './constants.ts';
import {
  NbdDisconnectedError,
  NbdError,
  NbdOptionError,
  NbdProtocolError,
  NbdRequestError,
} from './errors.ts';
import { decodeUtf8, describeBytes, encodeUtf8, toU64, u64ToSafeNumber, viewOf } from './wire.ts';

export interface NbdClientOptions {
  /** Export to attach; '' (the default) is the server's default export. */
  exportName?: string;
  /** Requests outstanding at once; more wait in a queue. Default 16. */
  maxInFlight?: number;
}

interface Pending {
  type: number;
  offset: number;
  length: number;
  /** With a read's payload as the pieces it arrived in; with undefined for other requests. */
  resolve: (data: Uint8Array[] | undefined) => void;
  reject: (error: Error) => void;
}

interface Negotiated {
  size: number;
  flags: number;
  blockSize?: BlockSizeConstraints;
}

/** Largest trim sent in one request (any power-of-two alignment divides it). */
const MAX_TRIM_CHUNK = 2 ** 30;
/** Option reply payloads we accept (strings are at most 4096 bytes; a few fields around them). */
const MAX_OPTION_REPLY_LENGTH = 64 * 1024;
const EMPTY = new Uint8Array(0);

export class NbdClient implements BlockDevice {
  readonly size: number;
  readonly readOnly: boolean;
  readonly blockSize?: BlockSizeConstraints;
  readonly exportName: string;
  /** The server's transmission flags (NBD_FLAG_*). */
  readonly transmissionFlags: number;
  /** Settles when the session is over: with undefined after close(), with the reason otherwise. */
  readonly closed: Promise<Error | undefined>;

  private readonly pending = new Map<number, Pending>();
  private readonly maxInFlight: number;
  private readonly maxRequest: number;
  private readonly alignment: number;
  private nextHandle = 0;
  private queue: Array<() => void> = [];
  private active = 0;
  private writeChain: Promise<void> = Promise.resolve();
  private failure: Error | undefined;
  private closing: Promise<void> | undefined;
  private settleClosed!: (reason: Error | undefined) => void;

  private constructor(
    private readonly connection: NbdConnection,
    private readonly reader: ByteReader,
    exportName: string,
    negotiated: Negotiated,
    options: NbdClientOptions,
  ) {
    this.exportName = exportName;
    this.size = negotiated.size;
    this.transmissionFlags = negotiated.flags;
    this.readOnly = (negotiated.flags & FLAG_READ_ONLY) !== 0;
    if (negotiated.blockSize) this.blockSize = negotiated.blockSize;
    this.alignment = negotiated.blockSize?.minimum ?? 1;
    const maximum = Math.min(negotiated.blockSize?.maximum ?? DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_PAYLOAD);
    this.maxRequest = Math.max(this.alignment, maximum - (maximum % this.alignment));
    this.maxInFlight = Math.max(1, Math.floor(options.maxInFlight ?? 16));
    this.closed = new Promise((resolve) => {
      this.settleClosed = resolve;
    });
    void this.receiveReplies();
  }

  /** Performs the handshake on `connection` and returns the attached export. */
  static async connect(connection: NbdConnection, options: NbdClientOptions = {}): Promise<NbdClient> {
    const reader = new ByteReader(connection);
    const exportName = options.exportName ?? '';
    try {
      const negotiated = await negotiate(connection, reader, exportName);
      return new NbdClient(connection, reader, exportName, negotiated, options);
    } catch (error) {
      connection.close();
      throw error;
    }
  }

  /** Asks the server for its export names (NBD_OPT_LIST), then leaves with NBD_OPT_ABORT. */
  static async listExports(connection: NbdConnection): Promise<string[]> {
    const reader = new ByteReader(connection);
    try {
      const { fixed } = await greet(connection, reader);
      if (!fixed) throw new NbdError('server does not support fixed newstyle negotiation, so cannot list');
      await sendOption(connection, OPT_LIST, EMPTY);
      const names: string[] = [];
      for (;;) {
        const { type, payload } = await readOptionReply(reader, OPT_LIST);
        if (type === REP_SERVER) {
          const view = viewOf(payload);
          const length = payload.length >= 4 ? view.getUint32(0) : -1;
          if (length < 0 || length > payload.length - 4) {
            throw new NbdProtocolError('malformed NBD_REP_SERVER reply');
          }
          names.push(decodeUtf8(payload.subarray(4, 4 + length)));
        } else if (type === REP_ACK) {
          break;
        } else {
          throw optionError(type, payload, 'server refused to list its exports');
        }
      }
      await sendOption(connection, OPT_ABORT, EMPTY).catch(() => undefined);
      return names;
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
    return this.pending.size;
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
    if (length > 0 && length <= this.maxRequest) return (await this.request(CMD_READ, 0, offset, length))!;
    const parts: Promise<Uint8Array[] | undefined>[] = [];
    for (let done = 0; done < length; done += this.maxRequest) {
      parts.push(this.request(CMD_READ, 0, offset + done, Math.min(this.maxRequest, length - done)));
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
      parts.push(this.request(CMD_WRITE, flags, offset + done, part, data.subarray(done, done + part)));
    }
    await Promise.all(parts);
    if (fua && !this.canFua) await this.flush();
  }

  async flush(): Promise<void> {
    if (!this.canFlush) return;
    await this.request(CMD_FLUSH, 0, 0, 0);
  }

  async trim(offset: number, length: number): Promise<void> {
    if (this.readOnly) throw new NbdRequestError(EPERM, `export '${this.exportName}' is read-only`);
    this.checkRange('trim', offset, length);
    if (!this.canTrim || length === 0) return;
    const parts: Promise<unknown>[] = [];
    for (let done = 0; done < length; done += MAX_TRIM_CHUNK) {
      parts.push(this.request(CMD_TRIM, 0, offset + done, Math.min(MAX_TRIM_CHUNK, length - done)));
    }
    await Promise.all(parts);
  }

  /**
   * Waits for outstanding requests (at most `graceMs`, default 5000), sends NBD_CMD_DISC and closes the
   * connection; requests still outstanding after the grace period reject. Requests made after close()
   * reject at once.
   */
  close(options: { graceMs?: number } = {}): Promise<void> {
    this.closing ??= (async () => {
      const grace = options.graceMs ?? 5000;
      const idle = await within(this.whenIdle(), grace);
      if (idle && !this.failure) {
        const disc = new Uint8Array(REQUEST_HEADER_SIZE);
        const view = viewOf(disc);
        view.setUint32(0, REQUEST_MAGIC);
        view.setUint16(6, CMD_DISC);
        await within(
          this.enqueueWrite(disc).catch(() => undefined),
          grace,
        );
      }
      const outstanding = this.pending.size + this.queue.length;
      this.fail(
        new NbdDisconnectedError(
          outstanding > 0 ? `client closed with ${outstanding} request(s) outstanding` : 'client closed',
        ),
        true,
      );
      this.connection.close();
      await this.closed;
    })();
    return this.closing;
  }

  private idleWaiters: Array<() => void> = [];

  /** Resolves once no request is outstanding or queued. */
  private whenIdle(): Promise<void> {
    if (this.active === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
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

  private async acquire(): Promise<void> {
    if (this.active < this.maxInFlight) {
      this.active++;
      return;
    }
    await new Promise<void>((resolve) => this.queue.push(resolve));
  }

  private release(): void {
    const next = this.queue.shift();
    if (next) next();
    else {
      this.active--;
      if (this.active === 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const wake of waiters) wake();
      }
    }
  }

  private async request(
    type: number,
    flags: number,
    offset: number,
    length: number,
    payload?: Uint8Array,
  ): Promise<Uint8Array[] | undefined> {
    if (this.failure) throw this.failure;
    if (this.closing) throw new NbdDisconnectedError('client is closing');
    await this.acquire();
    try {
      if (this.failure) throw this.failure;
      let handle = this.nextHandle;
      while (this.pending.has(handle)) handle = (handle + 1) % 0x100000000;
      this.nextHandle = (handle + 1) % 0x100000000;

      const header = new Uint8Array(REQUEST_HEADER_SIZE);
      const view = viewOf(header);
      view.setUint32(0, REQUEST_MAGIC);
      view.setUint16(4, flags);
      view.setUint16(6, type);
      view.setUint32(8, 0);
      view.setUint32(12, handle);
      view.setBigUint64(16, toU64(offset));
      view.setUint32(24, length);

      const reply = new Promise<Uint8Array[] | undefined>((resolve, reject) => {
        this.pending.set(handle, { type, offset, length, resolve, reject });
      });
      // A failed write fails the whole session (and with it this request's reply promise).
      this.enqueueWrite(header, payload).catch((error: unknown) => {
        this.fail(error instanceof Error ? error : new NbdDisconnectedError(String(error)));
      });
      return await reply;
    } finally {
      this.release();
    }
  }

  private enqueueWrite(header: Uint8Array, payload?: Uint8Array): Promise<void> {
    const send = this.writeChain.then(async () => {
      if (this.failure) throw this.failure;
      await this.connection.write(header);
      if (payload && payload.length > 0) await this.connection.write(payload);
    });
    this.writeChain = send.catch(() => undefined);
    return send;
  }

  /** Ends the session: every outstanding request rejects with `error`. */
  private fail(error: Error, expected = false): void {
    if (this.failure) return;
    this.failure = error;
    for (const entry of this.pending.values()) entry.reject(error);
    this.pending.clear();
    this.connection.close();
    this.settleClosed(expected ? undefined : error);
  }

  private async receiveReplies(): Promise<void> {
    try {
      for (;;) {
        const header = await this.reader.readOrEnd(SIMPLE_REPLY_HEADER_SIZE, 'reply header');
        if (!header) {
          const outstanding = this.pending.size;
          this.fail(
            new NbdDisconnectedError(
              outstanding > 0
                ? `server closed the connection with ${outstanding} request(s) outstanding`
                : 'server closed the connection',
            ),
            this.closing !== undefined,
          );
          return;
        }
        const view = viewOf(header);
        const magic = view.getUint32(0);
        if (magic !== SIMPLE_REPLY_MAGIC) {
          throw new NbdProtocolError(
            magic === STRUCTURED_REPLY_MAGIC
              ? 'server sent a structured reply although none was negotiated'
              : `bad reply magic: expected 0x67446698, got ${describeBytes(header)}`,
          );
        }
        const errno = view.getUint32(4);
        const handleHigh = view.getUint32(8);
        const handle = view.getUint32(12);
        const entry = handleHigh === 0 ? this.pending.get(handle) : undefined;
        if (!entry) {
          throw new NbdProtocolError(`server replied to unknown handle ${describeBytes(header.subarray(8))}`);
        }
        this.pending.delete(handle);
        if (errno !== 0) {
          // The server is shutting down: the spec asks the client to disconnect (softly).
          if (errno === ESHUTDOWN) void this.close();
          entry.reject(
            new NbdRequestError(
              errno,
              `NBD ${commandName(entry.type)} of ${entry.length} bytes at offset ${entry.offset} failed: ` +
                `${errorName(errno)} (${errno})`,
            ),
          );
          continue;
        }
        if (entry.type !== CMD_READ) {
          entry.resolve(undefined);
          continue;
        }
        try {
          entry.resolve(await this.reader.readPieces(entry.length, 'read reply data'));
        } catch (error) {
          entry.reject(error as Error);
          throw error;
        }
      }
    } catch (error) {
      const reason =
        error instanceof Error
          ? this.closing && error instanceof NbdDisconnectedError
            ? undefined
            : error
          : new NbdProtocolError(String(error));
      this.fail(reason ?? new NbdDisconnectedError('client closed'), reason === undefined);
    }
  }
}

/** Whether `promise` settled within `ms` milliseconds. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// ---- handshake helpers -------------------------------------------------------------------------

async function greet(
  connection: NbdConnection,
  reader: ByteReader,
): Promise<{ fixed: boolean; noZeroes: boolean }> {
  const closedEarly = (error: unknown) => {
    throw error instanceof NbdDisconnectedError
      ? new NbdDisconnectedError(`server closed the connection during its greeting (${error.message})`)
      : error;
  };
  // The magic first, on its own, so that a peer sending a few bytes of something else fails fast.
  const magic = await reader.readOrEnd(8, 'server greeting').catch(closedEarly);
  if (!magic) throw new NbdDisconnectedError('server closed the connection before sending its greeting');
  if (viewOf(magic).getBigUint64(0) !== NBDMAGIC) {
    throw new NbdProtocolError(`not an NBD server: expected NBDMAGIC, got ${describeBytes(magic)}`);
  }
  const rest = (await reader.read(10, 'server greeting').catch(closedEarly)) as Uint8Array;
  const hello = new Uint8Array(18);
  hello.set(magic);
  hello.set(rest, 8);
  const view = viewOf(hello);
  const second = view.getBigUint64(8);
  if (second === CLISERV_MAGIC) {
    throw new NbdProtocolError('server uses oldstyle negotiation, which is not supported');
  }
  if (second !== IHAVEOPT) {
    throw new NbdProtocolError(
      `not an NBD server: expected IHAVEOPT after NBDMAGIC, got ${describeBytes(hello)}`,
    );
  }
  const flags = view.getUint16(16);
  const fixed = (flags & FLAG_FIXED_NEWSTYLE) !== 0;
  const noZeroes = (flags & FLAG_NO_ZEROES) !== 0;
  const reply = new Uint8Array(4);
  viewOf(reply).setUint32(0, (fixed ? FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? FLAG_C_NO_ZEROES : 0));
  await connection.write(reply);
  return { fixed, noZeroes };
}

function sendOption(connection: NbdConnection, option: number, data: Uint8Array): Promise<void> {
  const message = new Uint8Array(OPTION_HEADER_SIZE + data.length);
  const view = viewOf(message);
  view.setBigUint64(0, IHAVEOPT);
  view.setUint32(8, option);
  view.setUint32(12, data.length);
  message.set(data, OPTION_HEADER_SIZE);
  return connection.write(message);
}

async function readOptionReply(
  reader: ByteReader,
  option: number,
): Promise<{ type: number; payload: Uint8Array }> {
  const header = await reader.readOrEnd(OPTION_REPLY_HEADER_SIZE, `reply to ${optionName(option)}`);
  if (!header) {
    throw new NbdDisconnectedError(`server closed the connection instead of answering ${optionName(option)}`);
  }
  const view = viewOf(header);
  if (view.getBigUint64(0) !== OPTION_REPLY_MAGIC) {
    throw new NbdProtocolError(`bad option reply magic: got ${describeBytes(header)}`);
  }
  const replyOption = view.getUint32(8);
  if (replyOption !== option) {
    throw new NbdProtocolError(`server answered ${optionName(replyOption)} when asked ${optionName(option)}`);
  }
  const type = view.getUint32(12);
  const length = view.getUint32(16);
  if (length > MAX_OPTION_REPLY_LENGTH) {
    throw new NbdProtocolError(`option reply of ${length} bytes is implausibly large`);
  }
  const payload = await reader.read(length, `reply to ${optionName(option)}`);
  return { type, payload };
}

function optionError(type: number, payload: Uint8Array, what: string): NbdOptionError {
  const message = type & REP_FLAG_ERROR ? decodeUtf8(payload) : '';
  return new NbdOptionError(type, `${what}: ${replyName(type)}${message ? ` (${message})` : ''}`, message);
}

async function negotiate(
  connection: NbdConnection,
  reader: ByteReader,
  exportName: string,
): Promise<Negotiated> {
  const { fixed, noZeroes } = await greet(connection, reader);
  const name = encodeUtf8(exportName);
  if (fixed) {
    const data = new Uint8Array(4 + name.length + 2 + 2);
    const view = viewOf(data);
    view.setUint32(0, name.length);
    data.set(name, 4);
    view.setUint16(4 + name.length, 1);
    view.setUint16(6 + name.length, INFO_BLOCK_SIZE);
    await sendOption(connection, OPT_GO, data);
    let result: Negotiated | undefined;
    let blockSize: BlockSizeConstraints | undefined;
    for (;;) {
      const { type, payload } = await readOptionReply(reader, OPT_GO);
      if (type === REP_INFO) {
        const info = parseInfo(payload);
        if (info?.kind === 'export') result = { size: info.size, flags: info.flags };
        else if (info?.kind === 'blockSize') blockSize = info.blockSize;
        continue;
      }
      if (type === REP_ACK) {
        if (!result) throw new NbdProtocolError('server accepted NBD_OPT_GO without sending NBD_INFO_EXPORT');
        if (blockSize) result.blockSize = blockSize;
        return result;
      }
      if (type === REP_ERR_UNSUP) break; // an old server: fall back to NBD_OPT_EXPORT_NAME
      await sendOption(connection, OPT_ABORT, EMPTY).catch(() => undefined);
      throw optionError(type, payload, `server refused export '${exportName}'`);
    }
  }
  await sendOption(connection, OPT_EXPORT_NAME, name);
  const reply = await reader.readOrEnd(10, 'export information').catch(() => null);
  if (!reply) {
    throw new NbdOptionError(
      0,
      `server closed the connection after NBD_OPT_EXPORT_NAME; export '${exportName}' probably does not exist`,
    );
  }
  const view = viewOf(reply);
  const size = u64ToSafeNumber(view.getBigUint64(0));
  if (size === undefined) throw new NbdError(`export size ${view.getBigUint64(0)} is beyond 2^53 - 1 bytes`);
  const flags = view.getUint16(8);
  if (!noZeroes) await reader.skip(124, 'export information padding');
  return { size, flags };
}

type Info =
  | { kind: 'export'; size: number; flags: number }
  | { kind: 'blockSize'; blockSize: BlockSizeConstraints }
  | undefined;

function parseInfo(payload: Uint8Array): Info {
  if (payload.length < 2) throw new NbdProtocolError('NBD_REP_INFO without an information type');
  const view = viewOf(payload);
  const type = view.getUint16(0);
  if (type === INFO_EXPORT) {
    if (payload.length !== 12) throw new NbdProtocolError(`NBD_INFO_EXPORT of ${payload.length} bytes`);
    const raw = view.getBigUint64(2);
    const size = u64ToSafeNumber(raw);
    if (size === undefined) throw new NbdError(`export size ${raw} is beyond 2^53 - 1 bytes`);
    return { kind: 'export', size, flags: view.getUint16(10) };
  }
  if (type === INFO_BLOCK_SIZE) {
    if (payload.length !== 14) throw new NbdProtocolError(`NBD_INFO_BLOCK_SIZE of ${payload.length} bytes`);
    const minimum = view.getUint32(2);
    const preferred = view.getUint32(6);
    const maximum = view.getUint32(10);
    if (minimum < 1 || minimum & (minimum - 1) || minimum > 65536 || maximum < minimum) {
      throw new NbdProtocolError(`invalid block size constraints ${minimum}/${preferred}/${maximum}`);
    }
    return { kind: 'blockSize', blockSize: { minimum, preferred, maximum } };
  }
  return undefined; // NBD_INFO_NAME, NBD_INFO_DESCRIPTION and anything newer: not needed
}
