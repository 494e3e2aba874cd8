import net from 'node:net';

/** Legacy credentials as bytes, so they can be wiped after use (a JS string cannot). */
export interface Credentials {
  user: string;
  password: Buffer;
  /** Overwrites the password bytes; call as soon as nbdkit has them. */
  wipe(): void;
}

export class CredentialsError extends Error {
  override name = 'CredentialsError';
}

export const MAX_CREDENTIAL_BYTES = 512;

/**
 * Reads `user\0password\0` from the read end of a pipe handed over D-Bus, once, and closes the fd.
 * The fd is wrapped in a non-blocking socket so a writer that never closes cannot hang a thread;
 * `signal` aborts the read. Every buffer that held the secret is zeroed before returning.
 */
export async function readCredentials(fd: number, signal: AbortSignal): Promise<Credentials> {
  const pipe = new net.Socket({ fd, readable: true, writable: false });
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(signal.reason ?? new Error('aborted'));
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      pipe.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        total += chunk.length;
        // Two fields, two terminators: anything longer is malformed, stop reading.
        if (total > 2 * (MAX_CREDENTIAL_BYTES + 1)) reject(new CredentialsError('credentials are too long'));
      });
      pipe.once('end', resolve);
      pipe.once('error', reject);
    });
    const all = Buffer.concat(chunks);
    try {
      return parseCredentials(all);
    } finally {
      all.fill(0);
    }
  } finally {
    for (const chunk of chunks) chunk.fill(0);
    pipe.destroy();
  }
}

/** Parses `user\0password\0` (the trailing NUL is optional); copies the password into its own buffer. */
function parseCredentials(bytes: Buffer): Credentials {
  const userEnd = bytes.indexOf(0);
  if (userEnd < 0) throw new CredentialsError('credentials must be user\\0password\\0');
  let passwordEnd = bytes.indexOf(0, userEnd + 1);
  if (passwordEnd < 0) passwordEnd = bytes.length;
  if (passwordEnd !== bytes.length && passwordEnd !== bytes.length - 1) {
    throw new CredentialsError('credentials carry data after the password');
  }
  if (userEnd > MAX_CREDENTIAL_BYTES || passwordEnd - userEnd - 1 > MAX_CREDENTIAL_BYTES) {
    throw new CredentialsError(`user name and password are limited to ${MAX_CREDENTIAL_BYTES} bytes each`);
  }
  const user = bytes.subarray(0, userEnd).toString('utf8');
  const password = Buffer.from(bytes.subarray(userEnd + 1, passwordEnd));
  return { user, password, wipe: () => password.fill(0) };
}
