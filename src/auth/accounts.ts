import { chmod, link, mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { isRoleId, type RoleId } from './privileges.ts';
import { decoyHash, hashPassword, verifyPassword } from './secrets.ts';

/** The account service settings a client may change; persisted with the accounts. */
export interface AccountPolicy {
  minPasswordLength: number;
  maxPasswordLength: number;
  /** Failed logins that lock an account; 0 never locks. */
  lockoutThreshold: number;
  /** Seconds an account stays locked; 0 never locks. */
  lockoutDuration: number;
  /** Seconds after the last failure when the failure count starts again from zero. */
  lockoutCounterResetAfter: number;
}

/** An account as the rest of the server sees it: never the password hash. */
export interface Account {
  username: string;
  roleId: RoleId;
  enabled: boolean;
  locked: boolean;
}

interface StoredAccount {
  username: string;
  roleId: RoleId;
  enabled: boolean;
  passwordHash: string;
}

interface AccountsFile {
  version: 1;
  policy: AccountPolicy;
  /** SessionService.SessionTimeout in seconds: kept here so one file holds every auth setting. */
  sessionTimeout: number;
  accounts: StoredAccount[];
  /** Failed-login counters and lockouts by user name, so that a restart does not unlock an account. */
  lockouts?: Record<string, FailureRecord>;
}

interface FailureRecord {
  count: number;
  lastFailure: number;
  lockedUntil: number;
}

export const defaultPolicy: AccountPolicy = {
  minPasswordLength: 8,
  maxPasswordLength: 64,
  lockoutThreshold: 5,
  lockoutDuration: 300,
  lockoutCounterResetAfter: 60,
};

export const defaultSessionTimeout = 1800;

/**
 * Local accounts in `<state>/accounts.json` (mode 0600, replaced atomically), with scrypt hashes.
 * Lockout counters are kept in the same file (`lockouts`), so restarting the server is no way around a
 * lockout: each failed login and each reset of a counter is written before the login is answered.
 * Callers validate requests (password policy, role names); the store keeps the data consistent.
 */
export class AccountStore {
  private readonly failures: Map<string, FailureRecord>;
  /** Serialises writes so two requests never interleave read-modify-write of the file. */
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly file: string,
    private data: AccountsFile,
    private readonly now: () => number,
  ) {
    this.failures = new Map(Object.entries(data.lockouts ?? {}));
  }

  /** Opens the store; the file must exist (see `provisionAdmin`). */
  static async open(file: string, now: () => number = Date.now): Promise<AccountStore> {
    const data = JSON.parse(await readFile(file, 'utf8')) as AccountsFile;
    return new AccountStore(file, data, now);
  }

  /** Writes a new store holding one Administrator account. Refuses to overwrite an existing file. */
  static async create(file: string, admin: { username: string; password: string }): Promise<void> {
    const data: AccountsFile = {
      version: 1,
      policy: defaultPolicy,
      sessionTimeout: defaultSessionTimeout,
      accounts: [
        {
          username: admin.username,
          roleId: 'Administrator',
          enabled: true,
          passwordHash: await hashPassword(admin.password),
        },
      ],
    };
    await writeAtomically(file, data, { exclusive: true });
  }

  get policy(): Readonly<AccountPolicy> {
    return this.data.policy;
  }

  get sessionTimeout(): number {
    return this.data.sessionTimeout;
  }

  list(): Account[] {
    return this.data.accounts.map((stored) => this.view(stored));
  }

  get(username: string): Account | undefined {
    const stored = this.find(username);
    return stored && this.view(stored);
  }

  passwordFitsPolicy(password: string): boolean {
    const { minPasswordLength, maxPasswordLength } = this.data.policy;
    return password.length >= minPasswordLength && password.length <= maxPasswordLength;
  }

  async create(account: { username: string; password: string; roleId: RoleId; enabled: boolean }) {
    const passwordHash = await hashPassword(account.password);
    await this.change((data) => {
      data.accounts.push({
        username: account.username,
        roleId: account.roleId,
        enabled: account.enabled,
        passwordHash,
      });
    });
  }

  async update(
    username: string,
    changes: { username?: string; password?: string; roleId?: RoleId; enabled?: boolean; locked?: false },
  ) {
    const passwordHash = changes.password === undefined ? undefined : await hashPassword(changes.password);
    await this.change((data) => {
      const stored = data.accounts.find((a) => a.username === username);
      if (!stored) throw new Error(`no account ${username}`);
      if (changes.roleId !== undefined) stored.roleId = changes.roleId;
      if (changes.enabled !== undefined) stored.enabled = changes.enabled;
      if (passwordHash !== undefined) stored.passwordHash = passwordHash;
      if (changes.username !== undefined) stored.username = changes.username;
    });
    if (changes.locked === false || changes.username !== undefined) await this.forgetFailures(username);
  }

  async remove(username: string) {
    await this.change((data) => {
      data.accounts = data.accounts.filter((a) => a.username !== username);
    });
    await this.forgetFailures(username);
  }

  async setPolicy(changes: Partial<AccountPolicy>) {
    await this.change((data) => {
      data.policy = { ...data.policy, ...changes };
    });
  }

  async setSessionTimeout(seconds: number) {
    await this.change((data) => {
      data.sessionTimeout = seconds;
    });
  }

  /**
   * Checks a login and applies the lockout policy. Unknown users, wrong passwords, disabled and locked
   * accounts all answer `undefined` after the same amount of work, so a caller cannot tell them apart.
   */
  async verify(username: string, password: string): Promise<Account | undefined> {
    const stored = this.find(username);
    const matches = await verifyPassword(password, stored?.passwordHash ?? (await decoyHash()));
    if (!stored) return undefined;
    if (this.isLocked(username)) return undefined;
    if (!matches) {
      await this.recordFailure(username);
      return undefined;
    }
    await this.forgetFailures(username);
    return stored.enabled ? this.view(stored) : undefined;
  }

  private async forgetFailures(username: string) {
    if (this.failures.delete(username)) await this.saveFailures();
  }

  /** Writes the counters as they are when the write runs (writes are serialised by `change`). */
  private saveFailures(): Promise<void> {
    return this.change((data) => {
      data.lockouts = Object.fromEntries(this.failures);
    });
  }

  private async recordFailure(username: string) {
    const { lockoutThreshold, lockoutDuration, lockoutCounterResetAfter } = this.data.policy;
    const now = this.now();
    const previous = this.failures.get(username);
    const stale = !previous || now - previous.lastFailure > lockoutCounterResetAfter * 1000;
    const count = (stale ? 0 : previous.count) + 1;
    const locks = lockoutThreshold > 0 && lockoutDuration > 0 && count >= lockoutThreshold;
    this.failures.set(username, {
      count: locks ? 0 : count,
      lastFailure: now,
      lockedUntil: locks ? now + lockoutDuration * 1000 : 0,
    });
    await this.saveFailures();
  }

  private isLocked(username: string): boolean {
    return (this.failures.get(username)?.lockedUntil ?? 0) > this.now();
  }

  private find(username: string): StoredAccount | undefined {
    return this.data.accounts.find((a) => a.username === username);
  }

  private view(stored: StoredAccount): Account {
    const { username, roleId, enabled } = stored;
    return {
      username,
      roleId: isRoleId(roleId) ? roleId : 'ReadOnly',
      enabled,
      locked: this.isLocked(username),
    };
  }

  private change(mutate: (data: AccountsFile) => void): Promise<void> {
    const next = this.writing.then(async () => {
      const copy = structuredClone(this.data);
      mutate(copy);
      await writeAtomically(this.file, copy, { exclusive: false });
      this.data = copy;
    });
    this.writing = next.catch(() => {});
    return next;
  }
}

/**
 * Write to a sibling temporary file, fsync, then rename: readers see the old file or the new one, never
 * half of one. `exclusive` links instead of renaming, which fails if the file exists: two servers starting
 * on one state directory cannot both provision an admin.
 */
async function writeAtomically(file: string, data: AccountsFile, { exclusive }: { exclusive: boolean }) {
  await mkdir(path.dirname(file), { recursive: true });
  const temporary = `${file}.${process.pid}.tmp`;
  const handle = await open(temporary, 'w', 0o600);
  try {
    await handle.writeFile(`${JSON.stringify(data, null, 2)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await chmod(temporary, 0o600);
  if (!exclusive) return rename(temporary, file);
  try {
    await link(temporary, file);
  } finally {
    await unlink(temporary);
  }
}
