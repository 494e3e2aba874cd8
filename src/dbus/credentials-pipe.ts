import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { encodeCredentials } from '../contract/credentials.ts';
import type { LegacyCredentials } from './virtual-media-client.ts';

const run = promisify(execFile);

/**
 * Calls `use` with the read end of a pipe that already holds `user\0password\0` (src/contract/credentials.ts)
 * and whose write end is closed, then closes the read end. Node cannot call pipe(2), so the pipe is a FIFO
 * created in a private 0700 directory and unlinked as soon as both ends are open: no other process can
 * open it, and the secret never touches argv, the environment or a regular file. The payload is wiped.
 * Throws CredentialsFormatError for credentials the contract refuses (too long, NUL inside).
 */
export async function withCredentialsPipe<T>(
  credentials: LegacyCredentials,
  use: (readFd: number) => Promise<T>,
): Promise<T> {
  const payload = encodeCredentials(credentials.user, credentials.password);
  let directory: string | undefined;
  let reader: fs.FileHandle | undefined;
  try {
    directory = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-credentials-'));
    const fifo = path.join(directory, 'pipe');
    await run('mkfifo', ['-m', '600', fifo]);
    // Non-blocking open of the read end succeeds without a writer; the write end then opens at once.
    reader = await fs.open(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const writer = await fs.open(fifo, constants.O_WRONLY);
    await fs.rm(directory, { recursive: true, force: true });
    try {
      // At most MAX_CREDENTIALS_PAYLOAD_BYTES (1026): below PIPE_BUF, so one atomic write that never blocks.
      await writer.write(payload);
    } finally {
      await writer.close();
    }
    return await use(reader.fd);
  } finally {
    payload.fill(0);
    await reader?.close();
    if (directory) await fs.rm(directory, { recursive: true, force: true });
  }
}
