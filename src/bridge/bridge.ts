import { once } from 'node:events';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { getSystemErrorName } from 'node:util';
import type { WebSocket } from 'ws';
import type { SlotState, VirtualMediaClient } from '../dbus/virtual-media-client.ts';
import { CloseCode, defaultLimits, Relay, type RelayLimits, type RelayStats } from './relay.ts';

/**
 * How long a session whose host side disconnected during the mount waits for the service's
 * Completion, so the WebSocket peer learns why (1011 with the errno) rather than just "gone".
 */
const COMPLETION_WAIT_MS = 500;

/** What the bridge logs through: a pino logger, such as fastify's. */
export interface BridgeLog {
  info(details: object | string, message?: string): void;
  warn(details: object | string, message?: string): void;
  error(details: object | string, message?: string): void;
  debug(details: object | string, message?: string): void;
  child(bindings: Record<string, unknown>): BridgeLog;
}

export interface NbdBridgeOptions {
  client: VirtualMediaClient;
  log: BridgeLog;
  limits?: RelayLimits;
}

/**
 * The `/nbd/<n>` sessions of one server: at most one per Proxy slot. A session listens on the slot's
 * Unix socket, asks the service to mount (`Proxy.Mount`; the service connects to that socket as the
 * host's NBD client) and relays the first connection to the WebSocket. When either side closes, or
 * the service reports a failed mount, it tears everything down: the other side closed, the socket
 * file removed, `Proxy.Unmount` called, the slot free again.
 */
export class NbdBridge {
  readonly limits: RelayLimits;
  private readonly sessions = new Map<string, BridgeSession>();
  private readonly stopListening: () => void;

  constructor(private readonly options: NbdBridgeOptions) {
    this.limits = options.limits ?? defaultLimits;
    this.stopListening = options.client.onCompletion((slotId, errno) =>
      this.sessions.get(slotId)?.completed(errno),
    );
  }

  /** Whether a session holds the slot (from the upgrade until its teardown finished). */
  has(slotId: string): boolean {
    return this.sessions.has(slotId);
  }

  /** The live relay counters of a slot's session (for tests and the benchmark). */
  stats(slotId: string): RelayStats | undefined {
    return this.sessions.get(slotId)?.relay.stats();
  }

  /**
   * Starts a session relaying `ws` for `slot`; the caller has checked that the slot is free.
   * `loginSession` is the id of the login session that opened it, when it came with one.
   */
  open(slot: SlotState, ws: WebSocket, loginSession?: string): void {
    if (this.sessions.has(slot.slotId)) throw new Error(`slot ${slot.slotId} already has a session`);
    const session = new BridgeSession(
      slot,
      ws,
      this.options.client,
      this.limits,
      this.options.log,
      loginSession,
    );
    this.sessions.set(slot.slotId, session);
    void session.done.then(() => this.sessions.delete(slot.slotId));
  }

  /**
   * Ends the slot's session, if any (EjectMedia on a Proxy slot, server shutdown): the WebSocket peer
   * gets close code 1000 with `reason`. Resolves `true` once the session is torn down and the slot
   * unmounted, `false` when there was no session.
   */
  async closeSession(slotId: string, reason: string): Promise<boolean> {
    const session = this.sessions.get(slotId);
    if (!session) return false;
    await session.eject(reason);
    await session.done;
    return true;
  }

  /** Ends every bridge session a login session opened (it was logged out): the peer gets 1008. */
  async closeSessionsOf(loginSession: string, reason: string): Promise<void> {
    const owned = [...this.sessions.values()].filter((session) => session.loginSession === loginSession);
    await Promise.all(
      owned.map(async (session) => {
        await session.eject(reason, CloseCode.PolicyViolation);
        await session.done;
      }),
    );
  }

  async closeAll(reason: string): Promise<void> {
    this.stopListening();
    await Promise.all([...this.sessions.keys()].map((slotId) => this.closeSession(slotId, reason)));
  }
}

class BridgeSession {
  readonly relay: Relay;
  /** Resolves when the session is torn down; it never rejects. */
  readonly done: Promise<void>;
  private readonly log: BridgeLog;
  private readonly socketPath: string;
  private server: net.Server | undefined;
  private attached = false;
  /** Why the session is being ejected, once `eject` was called, and the close code the peer gets. */
  private ejectReason: string | undefined;
  private ejectCode: number = CloseCode.Normal;
  /** The errno of the mount's Completion once it came. */
  private completion: number | undefined;
  private completionArrived: (() => void) | undefined;

  constructor(
    private readonly slot: SlotState,
    ws: WebSocket,
    private readonly client: VirtualMediaClient,
    limits: RelayLimits,
    log: BridgeLog,
    readonly loginSession?: string,
  ) {
    this.log = log.child({ slotId: slot.slotId });
    this.socketPath = slot.socket;
    this.relay = new Relay(ws, limits);
    this.done = this.run().catch((error) => this.log.error({ err: error }, 'bridge session failed'));
  }

  /**
   * Ends the session in order: the service unmounts first and leaves the socket, so the medium goes
   * away cleanly (Completion(0)) rather than as a lost connection (EIO); then the peer gets 1000.
   */
  async eject(reason: string, code: number = CloseCode.Normal): Promise<void> {
    this.ejectReason = reason;
    this.ejectCode = code;
    const unmounted = this.attached
      ? await this.client.proxyUnmount(this.slot.slotId).then(
          () => true,
          () => false,
        )
      : false;
    if (!unmounted) this.relay.close(code, reason);
  }

  completed(errno: number): void {
    if (this.completion !== undefined) return;
    this.completion = errno;
    this.completionArrived?.();
    if (errno === 0) {
      this.log.info('the host side mounted the medium');
      return;
    }
    this.relay.close(CloseCode.InternalError, `mount failed: ${errnoName(errno)}`);
  }

  private async run(): Promise<void> {
    let mountCalled = false;
    try {
      await this.listen();
      if (!this.relay.isEnded) {
        mountCalled = true;
        await this.client.proxyMount(this.slot.slotId);
        this.log.info({ socket: this.socketPath }, 'bridge session started; waiting for the host side');
      }
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.log.warn({ err: error }, 'bridge session could not start');
      this.relay.close(CloseCode.InternalError, `mount refused: ${message}`);
    }
    const end = await this.relay.ended;
    if (end.by === 'socket') await this.closeAfterHostLeft();
    await this.teardown(mountCalled);
    const stats = this.relay.stats();
    this.log.info(
      { by: end.by, code: end.code, reason: end.reason, bytesToHost: stats.bytesToSocket },
      'bridge session ended',
    );
  }

  /** Listens on the slot's socket, private to this user, replacing a stale file a crash left. */
  private async listen(): Promise<void> {
    await fs.mkdir(path.dirname(this.socketPath), { recursive: true, mode: 0o700 });
    await fs.rm(this.socketPath, { force: true });
    const server = net.createServer((socket) => {
      // The first connection is the host side; anyone else is refused.
      if (server.listening && !this.relay.isEnded && !this.attached) {
        this.attached = true;
        this.relay.attach(socket);
      } else {
        socket.destroy();
      }
    });
    this.server = server;
    server.listen(this.socketPath);
    await once(server, 'listening');
    // The directory is 0700 already; the mode keeps the socket private even if it is not.
    await fs.chmod(this.socketPath, 0o600);
  }

  /** The host side went away: tell the WebSocket peer why, waiting briefly for the mount's verdict. */
  private async closeAfterHostLeft(): Promise<void> {
    if (this.ejectReason !== undefined) return this.relay.close(this.ejectCode, this.ejectReason);
    if (this.completion === undefined) {
      const arrived = new Promise<void>((resolve) => {
        this.completionArrived = resolve;
      });
      await Promise.race([arrived, sleep(COMPLETION_WAIT_MS, undefined, { ref: false })]);
    }
    // completed() already closed with 1011 for a failed mount; otherwise the host simply left.
    this.relay.close(CloseCode.GoingAway, 'the host side disconnected');
  }

  private async teardown(mountCalled: boolean): Promise<void> {
    this.server?.close();
    await fs.rm(this.socketPath, { force: true });
    if (!mountCalled) return;
    // Refused when the service already unmounted (an eject, a failed mount): the slot is free anyway.
    await this.client
      .proxyUnmount(this.slot.slotId)
      .catch((error) => this.log.debug({ err: error }, 'Proxy.Unmount after the session'));
  }
}

/** `EIO (5)` for errno 5: the name a Linux user recognises, and the number the service sent. */
function errnoName(errno: number): string {
  try {
    return `${getSystemErrorName(-errno)} (${errno})`;
  } catch {
    return `errno ${errno}`;
  }
}
