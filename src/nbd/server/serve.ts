/**
 * NBD server: serves one client connection from a `BlockDevice` chosen by export name. The session runs
 * the handshake (./handshake.ts), then transmission on the chosen export (./transmission.ts), and owns
 * what both share: the connection, its reader, and the way the session ends (the client leaving, a
 * protocol violation, or `signal`). Not supported: TLS, and everything the two phases list.
 */
import { ByteReader } from '../byte-reader.ts';
import type { NbdConnection } from '../connection.ts';
import { NbdDisconnectedError } from '../errors.ts';
import { type HandshakeOptions, type HandshakeSession, negotiate, type ResolveExport } from './handshake.ts';
import { ServerTransmission, type TransmissionOptions, type TransmissionSession } from './transmission.ts';

export interface ServeNbdOptions extends HandshakeOptions, TransmissionOptions {
  /**
   * Ends the session: during the handshake at once; during transmission the requests already being
   * processed are answered, later ones get ESHUTDOWN, then the connection is closed (after at most
   * `shutdownGraceMs`, default 5000). `serveNbd` then resolves.
   */
  signal?: AbortSignal;
  shutdownGraceMs?: number;
}

/**
 * Runs the NBD protocol for one client on `connection`: handshake, then transmission against the block
 * device `resolveExport` returns for the requested export name ('' is the default export; `undefined`
 * means no such export). Resolves when the client disconnects (NBD_CMD_DISC, NBD_OPT_ABORT or end of
 * stream) or the session is aborted; rejects with an NbdError on a protocol violation (including more
 * than MAX_OPTIONS options in the handshake) or when the client insists on an unknown export through
 * NBD_OPT_EXPORT_NAME. The connection is closed in every case, and the promise settles only after every
 * backend call it started has settled.
 */
export function serveNbd(
  connection: NbdConnection,
  resolveExport: ResolveExport,
  options: ServeNbdOptions = {},
): Promise<void> {
  return new ServerSession(connection, resolveExport, options).run();
}

class ServerSession implements HandshakeSession, TransmissionSession {
  readonly reader: ByteReader;
  /** The transport failed or was closed by us: stop writing, stop reading. */
  closed = false;
  aborting = false;
  /** Set once the handshake chose an export. */
  private transmission: ServerTransmission | undefined;

  constructor(
    private readonly connection: NbdConnection,
    private readonly resolveExport: ResolveExport,
    private readonly options: ServeNbdOptions,
  ) {
    this.reader = new ByteReader(connection);
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
      const chosen = await negotiate(this, this.resolveExport, this.options);
      if (chosen) {
        this.transmission = new ServerTransmission(this, chosen, this.options);
        await this.transmission.run();
      }
    } catch (error) {
      // Once we are shutting down or the transport broke under us, a short read is expected.
      if (!(error instanceof NbdDisconnectedError && (this.aborting || this.closed))) throw error;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.close();
      await this.transmission?.idle();
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.connection.close();
  }

  async write(data: Uint8Array): Promise<void> {
    if (this.closed) throw new NbdDisconnectedError('connection closed');
    await this.connection.write(data);
  }

  private async abort(): Promise<void> {
    if (this.aborting) return;
    this.aborting = true;
    const { transmission } = this;
    if (!transmission) {
      this.close();
      return;
    }
    const grace = this.options.shutdownGraceMs ?? 5000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      transmission.idle(),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, grace);
      }),
    ]);
    clearTimeout(timer);
    this.close();
  }
}
