import { EventEmitter, once } from 'node:events';
import { Errno } from '../contract/dbus.ts';
import type { Logger } from '../log.ts';
import { CleanupStack } from './cleanup.ts';
import type { SlotConfig } from './config.ts';
import { errnoOf, MountFailure, PrecheckError } from './errors.ts';

export type SlotState = 'Ready' | 'Activating' | 'Active' | 'Deactivating';

export interface IoStats {
  readIO: bigint;
  writeIO: bigint;
}

/** What the D-Bus objects publish about a slot beyond its config. */
export interface SlotStatus extends IoStats {
  imageUrl: string;
  writeProtected: boolean;
  active: boolean;
  exitCode: number;
  remainingInactivityTimeout: number;
}

/** A medium attached to the host; the slot owns it until its cleanup stack runs. */
export interface MountedMedium {
  writeProtected: boolean;
  /** I/O since mount as the host sees it. */
  stats(): IoStats;
  /** Settles with an errno if the medium goes away on its own (source died, host detached). */
  lost: Promise<number>;
}

export interface MountContext {
  /** Aborted on timeout, cancel and shutdown; the reason is a MountFailure. */
  signal: AbortSignal;
  /** Everything the procedure creates is registered here and undone on every way out. */
  cleanup: CleanupStack;
  log: Logger;
}

export interface MountRequest {
  imageUrl: string;
  writeProtected: boolean;
  procedure: (context: MountContext) => Promise<MountedMedium>;
}

export interface SlotTiming {
  /** Seconds without I/O before an active slot unmounts itself; 0 disables. */
  inactivityTimeout: number;
  /** Added to the slot's Timeout for the completion timer, so nbd-client's own timeout fires first. */
  completionMarginSeconds: number;
  /** How often stats and the inactivity countdown are refreshed. */
  tickMs: number;
}

interface Session {
  controller: AbortController;
  cleanup: CleanupStack;
  ended?: Promise<void>;
  ticker?: NodeJS.Timeout;
}

function newSession(log: Logger): Session {
  return { controller: new AbortController(), cleanup: new CleanupStack(log) };
}

/**
 * One slot's state machine: Ready → Activating → Active → Deactivating → Ready. Every way back to
 * Ready (success, failure, timeout, cancel, lost medium, inactivity, shutdown) runs the session's
 * cleanup stack first and then emits exactly one `completion` with the errno.
 *
 * Events: `changed` (Partial<SlotStatus>) and `completion` (errno).
 */
export class Slot extends EventEmitter<{ changed: [Partial<SlotStatus>]; completion: [number] }> {
  private current: SlotState = 'Ready';
  private session: Session | undefined;
  readonly status: SlotStatus = {
    imageUrl: '',
    writeProtected: true,
    active: false,
    exitCode: 0,
    readIO: 0n,
    writeIO: 0n,
    remainingInactivityTimeout: 0,
  };

  constructor(
    readonly config: SlotConfig,
    private readonly timing: SlotTiming,
    private readonly log: Logger,
  ) {
    super();
  }

  get state(): SlotState {
    return this.current;
  }

  /** Starts mounting; throws PrecheckError unless the slot is Ready. The result comes as `completion`. */
  mount(request: MountRequest): void {
    if (this.current !== 'Ready') throw PrecheckError.busy(this.config.slotId, this.current);
    const session = newSession(this.log);
    this.session = session;
    this.current = 'Activating';
    this.update({
      imageUrl: request.imageUrl,
      writeProtected: request.writeProtected,
      exitCode: -1,
      readIO: 0n,
      writeIO: 0n,
    });
    this.log.info({ imageUrl: request.imageUrl }, 'mounting');
    void this.activate(session, request);
  }

  /**
   * Starts unmounting (or cancels an activation). On a Ready slot it is a success with an immediate
   * `completion(0)`: the slot already is what the caller asks for, and callers such as bmcweb's
   * EjectMedia or the /nbd bridge unmount after a medium that was lost on its own (its Completion
   * already went out) and must not see an error, nor wait for a Completion that never comes. The
   * Completion goes out before the method reply, so it cannot follow a Mount started afterwards.
   */
  unmount(): void {
    const session = this.session;
    if (this.current === 'Ready' || !session) {
      this.log.info('unmount of an empty slot: nothing to do');
      this.emit('completion', Errno.OK);
      return;
    }
    if (this.current === 'Deactivating') throw PrecheckError.busy(this.config.slotId, this.current);
    if (this.current === 'Activating') {
      session.controller.abort(new MountFailure(Errno.ECANCELED, 'mount cancelled by Unmount'));
      return;
    }
    void this.end(session, Errno.OK, 'unmounted');
  }

  /** Brings the slot back to Ready whatever it is doing (service shutdown). */
  async shutdown(): Promise<void> {
    const session = this.session;
    if (session && this.current === 'Activating') {
      session.controller.abort(new MountFailure(Errno.ECANCELED, 'service shutting down'));
    } else if (session && this.current === 'Active') {
      void this.end(session, Errno.OK, 'service shutting down');
    }
    while (this.current !== 'Ready') await once(this, 'completion');
  }

  private async activate(session: Session, request: MountRequest): Promise<void> {
    const { controller, cleanup } = session;
    const timer = setTimeout(
      () => controller.abort(new MountFailure(Errno.EBUSY, 'mount did not complete in time')),
      (this.config.timeout + this.timing.completionMarginSeconds) * 1000,
    );
    let medium: MountedMedium;
    try {
      // The procedure may be stuck on a silent peer: abandon it on abort, cleanup kills what it made.
      medium = await Promise.race([
        request.procedure({ signal: controller.signal, cleanup, log: this.log }),
        rejectOnAbort(controller.signal),
      ]);
    } catch (error) {
      const reason = controller.signal.aborted ? controller.signal.reason : error;
      this.log.warn({ err: reason }, 'mount failed');
      await this.end(session, errnoOf(reason), 'mount failed');
      return;
    } finally {
      clearTimeout(timer);
    }
    this.current = 'Active';
    this.update({
      active: true,
      writeProtected: medium.writeProtected,
      remainingInactivityTimeout: this.timing.inactivityTimeout,
    });
    this.log.info('mounted');
    this.emit('completion', Errno.OK);
    session.ticker = setInterval(() => this.tick(session, medium), this.timing.tickMs);
    void medium.lost.then((errno) => {
      if (this.session === session && this.current === 'Active') void this.end(session, errno, 'medium lost');
    });
  }

  private tick(session: Session, medium: MountedMedium): void {
    let stats: IoStats;
    try {
      stats = medium.stats();
    } catch (error) {
      this.log.warn({ err: error }, 'cannot read I/O statistics');
      return;
    }
    const { inactivityTimeout } = this.timing;
    if (stats.readIO !== this.status.readIO || stats.writeIO !== this.status.writeIO) {
      this.update({ ...stats, remainingInactivityTimeout: inactivityTimeout });
      return;
    }
    if (inactivityTimeout === 0) return;
    const remaining = Math.max(0, this.status.remainingInactivityTimeout - this.timing.tickMs / 1000);
    this.update({ remainingInactivityTimeout: Math.ceil(remaining) });
    if (remaining === 0) void this.end(session, Errno.OK, 'inactivity timeout');
  }

  /** The one way back to Ready: stop the ticker, undo everything, publish, then emit `completion`. */
  private end(session: Session, errno: number, why: string): Promise<void> {
    session.ended ??= (async () => {
      clearInterval(session.ticker);
      this.current = 'Deactivating';
      this.log.info({ errno, why }, 'releasing slot');
      await session.cleanup.run();
      this.session = undefined;
      this.current = 'Ready';
      this.update({ active: false, imageUrl: '', exitCode: errno, remainingInactivityTimeout: 0 });
      this.emit('completion', errno);
    })();
    return session.ended;
  }

  private update(changes: Partial<SlotStatus>): void {
    const changed: Partial<SlotStatus> = {};
    for (const [key, value] of Object.entries(changes) as [keyof SlotStatus, never][]) {
      if (this.status[key] === value) continue;
      (this.status as unknown as Record<string, unknown>)[key] = value;
      (changed as Record<string, unknown>)[key] = value;
    }
    if (Object.keys(changed).length > 0) this.emit('changed', changed);
  }
}

function rejectOnAbort(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}
