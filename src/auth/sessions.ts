import { errors } from '../redfish/errors.ts';
import { randomHex } from './secrets.ts';

export type SessionKind = 'token' | 'cookie';

export interface Session {
  readonly id: string;
  readonly token: string;
  readonly username: string;
  readonly kind: SessionKind;
  /** Cookie sessions only: the value the browser must echo in `X-XSRF-TOKEN`. */
  readonly xsrfToken?: string;
  readonly clientAddress: string;
  readonly createdAt: number;
  lastUsed: number;
}

/** How many sessions may live at once: per account, and in all. */
export interface SessionLimits {
  perAccount: number;
  total: number;
}

export const defaultSessionLimits: SessionLimits = { perAccount: 16, total: 64 };

/**
 * Live login sessions, in memory (a restart logs everyone out, like bmcweb without persistence).
 * A session expires after `timeout()` seconds without use; expired sessions are dropped when looked at.
 * An account at its limit loses its longest-idle session to a new login (a user who closes tabs without
 * logging out is not locked out); when all are taken, a login is refused with SessionLimitExceeded, so
 * one account cannot push other users out.
 */
export class SessionStore {
  private readonly byToken = new Map<string, Session>();
  private readonly endedListeners = new Set<(session: Session) => void>();

  constructor(
    private readonly timeout: () => number,
    private readonly now: () => number = Date.now,
    private readonly limits: SessionLimits = defaultSessionLimits,
  ) {}

  create(username: string, kind: SessionKind, clientAddress: string): Session {
    const live = this.list();
    const own = live.filter((session) => session.username === username);
    if (own.length >= this.limits.perAccount) {
      const idlest = own.reduce((a, b) => (b.lastUsed < a.lastUsed ? b : a));
      this.byToken.delete(idlest.token);
    } else if (live.length >= this.limits.total) {
      throw errors.sessionLimitExceeded();
    }
    const now = this.now();
    const session: Session = {
      // Ids appear in URIs and logs; the token is the secret and is never derived from the id.
      id: randomHex(10),
      token: randomHex(32),
      username,
      kind,
      ...(kind === 'cookie' ? { xsrfToken: randomHex(32) } : {}),
      clientAddress,
      createdAt: now,
      lastUsed: now,
    };
    this.byToken.set(session.token, session);
    return session;
  }

  /** The live session for a token, refreshed as used; `undefined` if unknown or idle too long. */
  use(token: string): Session | undefined {
    const session = this.byToken.get(token);
    if (!session || this.expired(session)) {
      if (session) this.byToken.delete(token);
      return undefined;
    }
    session.lastUsed = this.now();
    return session;
  }

  list(): Session[] {
    return [...this.byToken.values()].filter((session) => {
      if (!this.expired(session)) return true;
      this.byToken.delete(session.token);
      return false;
    });
  }

  get(id: string): Session | undefined {
    return this.list().find((session) => session.id === id);
  }

  delete(id: string): boolean {
    const session = this.get(id);
    if (!session || !this.byToken.delete(session.token)) return false;
    this.ended(session);
    return true;
  }

  /**
   * Called when a session is ended on purpose — logout, DELETE, or its account changed or removed — but
   * not when it idles out, which is noticed only when it is next looked at. Answers the unsubscribe.
   */
  onEnded(listener: (session: Session) => void): () => void {
    this.endedListeners.add(listener);
    return () => this.endedListeners.delete(listener);
  }

  /**
   * Logs a user out everywhere (their account was removed, disabled, renamed or given a new password),
   * except for `keep`: the session that made the change.
   */
  deleteUser(username: string, keep?: string) {
    for (const session of this.byToken.values()) {
      if (session.username === username && session.id !== keep) {
        this.byToken.delete(session.token);
        this.ended(session);
      }
    }
  }

  private ended(session: Session): void {
    for (const listener of this.endedListeners) listener(session);
  }

  private expired(session: Session): boolean {
    return this.now() - session.lastUsed > this.timeout() * 1000;
  }
}
