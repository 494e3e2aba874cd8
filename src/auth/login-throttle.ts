import { errors } from '../redfish/errors.ts';

/** How many password checks a client address may fail, and for how long a failure counts. */
export interface LoginThrottlePolicy {
  maxFailures: number;
  windowSeconds: number;
  /** Password checks running at once, from every address together: each costs an scrypt (32 MiB). */
  maxConcurrent: number;
}

export const defaultLoginThrottlePolicy: LoginThrottlePolicy = {
  maxFailures: 10,
  windowSeconds: 60,
  maxConcurrent: 4,
};

/** Addresses remembered at most; the stalest is forgotten first, so a flood of addresses costs bounded memory. */
const MAX_ADDRESSES = 4096;

interface Attempts {
  windowStart: number;
  failures: number;
  /** Checks under way: counted as failures until they end, so a burst cannot outrun the count. */
  pending: number;
}

/**
 * Failed logins per client address, checked before the password is (docs/contract.md §3): an address
 * that failed `maxFailures` times within `windowSeconds` gets 429 with Retry-After without an scrypt
 * being spent on it, and no more than `maxConcurrent` checks run at once (503 beyond). The per-account
 * lockout of AccountService is separate and still applies.
 */
export class LoginThrottle {
  private readonly byAddress = new Map<string, Attempts>();
  private running = 0;

  constructor(
    private readonly policy: LoginThrottlePolicy = defaultLoginThrottlePolicy,
    private readonly now: () => number = Date.now,
  ) {}

  /** Runs one password check for `address`, or refuses it (429/503) before it starts. */
  async check<T>(address: string, verify: () => Promise<T | undefined>): Promise<T | undefined> {
    const attempts = this.attemptsOf(address);
    const windowEnd = attempts.windowStart + this.policy.windowSeconds * 1000;
    if (attempts.failures + attempts.pending >= this.policy.maxFailures) {
      throw errors.tooManyRequests(Math.max(1, Math.ceil((windowEnd - this.now()) / 1000)));
    }
    if (this.running >= this.policy.maxConcurrent) throw errors.serviceTemporarilyUnavailable(1);
    attempts.pending++;
    this.running++;
    let result: T | undefined;
    try {
      result = await verify();
    } finally {
      attempts.pending--;
      this.running--;
    }
    if (result === undefined) attempts.failures++;
    else this.byAddress.delete(address);
    return result;
  }

  private attemptsOf(address: string): Attempts {
    const now = this.now();
    let attempts = this.byAddress.get(address);
    if (
      attempts &&
      now - attempts.windowStart >= this.policy.windowSeconds * 1000 &&
      attempts.pending === 0
    ) {
      this.byAddress.delete(address);
      attempts = undefined;
    }
    if (!attempts) {
      attempts = { windowStart: now, failures: 0, pending: 0 };
      if (this.byAddress.size >= MAX_ADDRESSES) this.byAddress.delete(this.byAddress.keys().next().value!);
    } else {
      // Map order is recency: the stalest address is the first one.
      this.byAddress.delete(address);
    }
    this.byAddress.set(address, attempts);
    return attempts;
  }
}
