/**
 * The client's transmission phase (proto.md "Transmission"): requests on the attached export, pipelined
 * up to `maxInFlight` (more wait in a queue), written one after another, and simple replies matched by
 * handle in whatever order they come; a read's data is handed on as the pieces the connection delivered.
 * The session ends with NBD_CMD_DISC (`close()`, also sent by itself when the server answers ESHUTDOWN),
 * or when the server sends garbage (bad magic, an unknown handle, a structured reply that was never
 * negotiated) or goes away: every outstanding request then fails with an NbdProtocolError or
 * NbdDisconnectedError, and `closed` reports why.
 */
import type { ByteReader } from '../byte-reader.ts';
import type { NbdConnection } from '../connection.ts';
import {
  CMD_DISC,
  CMD_READ,
  commandName,
  ESHUTDOWN,
  errorName,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
} from '../constants.ts';
import { NbdDisconnectedError, NbdProtocolError, NbdRequestError } from '../errors.ts';
import {
  decodeSimpleReply,
  encodeRequest,
  SIMPLE_REPLY_HEADER_SIZE,
  type SimpleReplyHeader,
  simpleReplyHeader,
} from '../protocol.ts';
import { describeBytes } from '../wire.ts';

interface Pending {
  type: number;
  offset: number;
  length: number;
  /** With a read's payload as the pieces it arrived in; with undefined for other requests. */
  resolve: (data: Uint8Array[] | undefined) => void;
  reject: (error: Error) => void;
}

export class ClientTransmission {
  /** Settles when the session is over: with undefined after close(), with the reason otherwise. */
  readonly closed: Promise<Error | undefined>;

  private readonly pending = new Map<number, Pending>();
  /** The reply header being decoded: one object for the session, not one per reply. */
  private readonly header: SimpleReplyHeader = simpleReplyHeader();
  private nextHandle = 0;
  private queue: Array<() => void> = [];
  private active = 0;
  private idleWaiters: Array<() => void> = [];
  private writeChain: Promise<void> = Promise.resolve();
  private failure: Error | undefined;
  private closing: Promise<void> | undefined;
  private settleClosed!: (reason: Error | undefined) => void;

  constructor(
    private readonly connection: NbdConnection,
    private readonly reader: ByteReader,
    private readonly maxInFlight: number,
  ) {
    this.closed = new Promise((resolve) => {
      this.settleClosed = resolve;
    });
    void this.receiveReplies();
  }

  /** Requests sent and not answered yet. */
  get inFlight(): number {
    return this.pending.size;
  }

  /**
   * Sends one request and resolves with its reply: a read's data as pieces, undefined otherwise; rejects
   * with an NbdRequestError when the server answers with an error value.
   */
  async request(
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

      const header = encodeRequest(type, flags, handle, offset, length);
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

  /**
   * Waits for outstanding requests (at most `graceMs`), sends NBD_CMD_DISC and closes the connection;
   * requests still outstanding after the grace period reject. Requests made after close() reject at once.
   */
  close(graceMs = 5000): Promise<void> {
    this.closing ??= (async () => {
      const idle = await within(this.whenIdle(), graceMs);
      if (idle && !this.failure) {
        await within(
          this.enqueueWrite(encodeRequest(CMD_DISC, 0, 0, 0, 0)).catch(() => undefined),
          graceMs,
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

  /** Resolves once no request is outstanding or queued. */
  private whenIdle(): Promise<void> {
    if (this.active === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
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
        const bytes = await this.reader.readOrEnd(SIMPLE_REPLY_HEADER_SIZE, 'reply header');
        if (!bytes) {
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
        const { magic, error: errno, handleHigh, handleLow: handle } = decodeSimpleReply(bytes, this.header);
        if (magic !== SIMPLE_REPLY_MAGIC) {
          throw new NbdProtocolError(
            magic === STRUCTURED_REPLY_MAGIC
              ? 'server sent a structured reply although none was negotiated'
              : `bad reply magic: expected 0x67446698, got ${describeBytes(bytes)}`,
          );
        }
        const entry = handleHigh === 0 ? this.pending.get(handle) : undefined;
        if (!entry) {
          throw new NbdProtocolError(`server replied to unknown handle ${describeBytes(bytes.subarray(8))}`);
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
