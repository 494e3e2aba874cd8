import { createHash, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

/** Random hex: session tokens, XSRF tokens, session ids. */
export function randomHex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

/** Constant-time string equality (XSRF tokens, `Sec-WebSocket-Protocol`), safe for unequal lengths. */
export function safeEqual(a: string, b: string): boolean {
  // Comparing fixed-length digests keeps the time independent of where, or whether, the lengths differ.
  const digest = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(a), digest(b));
}

// scrypt parameters: N=2^15 costs ~100 ms and 32 MiB per check (OWASP's recommended minimum is N=2^17
// with r=8,p=1 at 128 MiB; a BMC has little RAM, so trade memory for the lockout policy's help).
const cost = { N: 2 ** 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const keyLength = 32;

function derive(
  password: string,
  salt: Buffer,
  params: { N: number; r: number; p: number },
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keyLength, { ...params, maxmem: cost.maxmem }, (error, key) =>
      error ? reject(error) : resolve(key),
    );
  });
}

/** `scrypt$N$r$p$<salt b64>$<hash b64>`: self-describing, so the cost can rise without breaking old hashes. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, cost);
  return ['scrypt', cost.N, cost.r, cost.p, salt.toString('base64'), key.toString('base64')].join('$');
}

export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  const [scheme, N, r, p, salt, hash] = encoded.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const key = await derive(password, Buffer.from(salt, 'base64'), {
    N: Number(N),
    r: Number(r),
    p: Number(p),
  });
  return key.length === expected.length && timingSafeEqual(key, expected);
}

let decoy: Promise<string> | undefined;

/** A hash of a random password: verifying against it costs what a real check costs (no user enumeration). */
export function decoyHash(): Promise<string> {
  decoy ??= hashPassword(randomHex(16));
  return decoy;
}
