import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { LegacyCredentials } from './virtual-media-client.ts';

const run = promisify(execFile);

/** Each credential must fit the service's buffer (docs/contract.md §2). */
export const MAX_CREDENTIAL_BYTES = 512;

/**
 * Calls `use` with the read end of a pipe that already holds `user\0password\0` and whose write end
 * is closed, then closes the read end. Node cannot call pipe(2), so the pipe is a FIFO created in a
 * private 0700 directory and unlinked as soon as both ends are open: no other process can open it,
 * and the secret never touches argv, the environment or a regular file. The payload buffer is wiped.
 */
export async function withCredentialsPipe<T>(
  credentials: LegacyCredentials,
  use: (readFd: number) => Promise<T>,
): Promise<T> {
  // Written in place (no intermediate copies left behind), NUL-terminated by Buffer.alloc's zeroes.
  const userBytes = Buffer.byteLength(credentials.user, 'utf8');
  const payload = Buffer.alloc(userBytes + Buffer.byteLength(credentials.password, 'utf8') + 2);
  payload.write(credentials.user, 0, 'utf8');
  payload.write(credentials.password, userBytes + 1, 'utf8');
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-credentials-'));
  let reader: fs.FileHandle | undefined;
  try {
    const fifo = path.join(directory, 'pipe');
    await run('mkfifo', ['-m', '600', fifo]);
    // Non-blocking open of the read end succeeds without a writer; the write end then opens at once.
    reader = await fs.open(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const writer = await fs.open(fifo, constants.O_WRONLY);
    await fs.rm(directory, { recursive: true, force: true });
    try {
      // At most 1026 bytes: below PIPE_BUF, so one atomic write that never blocks.
      await writer.write(payload);
    } finally {
      await writer.close();
    }
    return await use(reader.fd);
  } finally {
    payload.fill(0);
    await reader?.close();
    await fs.rm(directory, { recursive: true, force: true });
  }
}
