import net from 'node:net';
import {
  CredentialsFormatError,
  decodeCredentials,
  MAX_CREDENTIALS_PAYLOAD_BYTES,
} from '../contract/credentials.ts';

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

/**
 * Reads `user\0password\0` (src/contract/credentials.ts) from the read end of a pipe handed over D-Bus,
 * once, and closes the fd. The fd is wrapped in a non-blocking socket so a writer that never closes cannot
 * hang a thread; `signal` aborts the read. Every buffer that held the secret is zeroed before returning.
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
        if (total > MAX_CREDENTIALS_PAYLOAD_BYTES) reject(new CredentialsError('credentials are too long'));
      });
      pipe.once('end', resolve);
      pipe.once('error', reject);
    });
    const all = Buffer.concat(chunks);
    try {
      const { user, password } = decodeCredentials(all);
      const bytes = Buffer.from(password.buffer, password.byteOffset, password.byteLength);
      return { user, password: bytes, wipe: () => bytes.fill(0) };
    } catch (error) {
      if (error instanceof CredentialsFormatError) throw new CredentialsError(error.message);
      throw error;
    } finally {
      all.fill(0);
    }
  } finally {
    for (const chunk of chunks) chunk.fill(0);
    pipe.destroy();
  }
}
