import { readSync } from 'node:fs';
import fs from 'node:fs/promises';
import type { BlockDevice } from '../nbd/block-device.ts';

/** Reads up to this size are made synchronously (see `read`). */
const SYNC_READ_MAX_BYTES = 64 * 1024;

/**
 * A local file as a block device, for `vmedia mount`: reads and (with `--rw`) writes go to the file
 * itself at their offsets, exact to 2^53. Opened read-only unless writable, so a read-only mount can
 * never change it.
 */
export class LocalFileDevice implements BlockDevice {
  private constructor(
    private readonly handle: fs.FileHandle,
    readonly size: number,
    readonly readOnly: boolean,
  ) {}

  static async open(file: string, writable: boolean): Promise<LocalFileDevice> {
    const handle = await fs.open(file, writable ? 'r+' : 'r');
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) throw new Error(`${file} is not a regular file`);
      return new LocalFileDevice(handle, stat.size, !writable);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    // A fresh buffer per read: it is handed to the transport, which owns it from then on.
    const buffer = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      // A small read is what an installer issues one at a time (queue depth 1); from the page cache it
      // takes microseconds, less than the thread pool's round trip (two thread wake-ups) an async read
      // costs, and this process serves nothing else meanwhile. Large reads stay off the event loop, so
      // a slow disk does not hold up the WebSocket.
      const bytesRead =
        length <= SYNC_READ_MAX_BYTES
          ? readSync(this.handle.fd, buffer, done, length - done, offset + done)
          : (await this.handle.read(buffer, done, length - done, offset + done)).bytesRead;
      if (bytesRead === 0) throw new Error(`the file shrank below ${offset + done} bytes`);
      done += bytesRead;
    }
    return buffer;
  }

  async write(offset: number, data: Uint8Array, options?: { fua?: boolean }): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
    if (options?.fua) await this.handle.datasync();
  }

  async flush(): Promise<void> {
    await this.handle.datasync();
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
