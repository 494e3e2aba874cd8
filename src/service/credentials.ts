import fs from 'node:fs';
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
 * Reads `user\0password\0` (src/contract/credentials.ts) from an fd handed over D-Bus, once, and closes
 * the fd. What other D-Bus clients hand over differs: a pipe (ours), a socket, or a regular file — an
 * unlinked 0600 file or a memfd, written and passed on without rewinding, so a file is read from its
 * start. Anything else (a directory, a device) is refused at once. A pipe or socket is wrapped in a
 * non-blocking socket so a writer that never closes cannot hang a thread; `signal` aborts the read.
 * Every buffer that held the secret is zeroed before returning.
 */
export async function readCredentials(fd: number, signal: AbortSignal): Promise<Credentials> {
  let kind: 'stream' | 'file';
  try {
    const stats = fs.fstatSync(fd);
    if (stats.isFIFO() || stats.isSocket()) kind = 'stream';
    else if (stats.isFile()) kind = 'file';
    else
      throw new CredentialsError(`the credentials fd is ${fdKind(stats)}: pass a pipe, a socket or a file`);
  } catch (error) {
    fs.closeSync(fd);
    if (error instanceof CredentialsError) throw error;
    throw new CredentialsError(
      `the credentials fd cannot be read (${(error as NodeJS.ErrnoException).code})`,
    );
  }
  const all = kind === 'file' ? readFileFd(fd) : await readStreamFd(fd, signal);
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
}

function fdKind(stats: fs.Stats): string {
  if (stats.isDirectory()) return 'a directory';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  return 'of an unknown type';
}

/** A regular file (or memfd), from offset 0 whatever its position, one byte past the limit at most. */
function readFileFd(fd: number): Buffer {
  const buffer = Buffer.alloc(MAX_CREDENTIALS_PAYLOAD_BYTES + 1);
  try {
    let length = 0;
    for (;;) {
      const read = fs.readSync(fd, buffer, length, buffer.length - length, length);
      if (read === 0) break;
      length += read;
      if (length > MAX_CREDENTIALS_PAYLOAD_BYTES) throw new CredentialsError('credentials are too long');
    }
    return Buffer.from(buffer.subarray(0, length));
  } catch (error) {
    buffer.fill(0);
    if (error instanceof CredentialsError) throw error;
    throw new CredentialsError(
      `the credentials file cannot be read (${(error as NodeJS.ErrnoException).code})`,
    );
  } finally {
    buffer.fill(0);
    fs.closeSync(fd);
  }
}

async function readStreamFd(fd: number, signal: AbortSignal): Promise<Buffer> {
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
    return Buffer.concat(chunks);
  } finally {
    for (const chunk of chunks) chunk.fill(0);
    pipe.destroy();
  }
}
