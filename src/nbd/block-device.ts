/**
 * What an NBD server exports and what an NBD client is: a range of `size` bytes with reads and,
 * unless read-only, writes. Backends (a browser `File`, a local file, an in-memory overlay) implement
 * it; the protocol code never knows which one it talks to.
 */
export interface BlockSizeConstraints {
  /** Smallest addressable unit and alignment: a power of two, 1..65536. */
  minimum: number;
  /** Size from which aligned I/O is efficient: a power of two, ≥ max(minimum, 512). */
  preferred: number;
  /** Largest payload of one read or write request; ≥ preferred. */
  maximum: number;
}

export interface BlockDevice {
  /** Size in bytes, exact: a non-negative integer up to Number.MAX_SAFE_INTEGER. */
  readonly size: number;
  readonly readOnly: boolean;
  /** Size constraints advertised to clients; the NBD defaults (1, 4096, 32 MiB) when absent. */
  readonly blockSize?: BlockSizeConstraints;
  /**
   * Resolves with exactly `length` bytes from `offset` (the caller guarantees the range lies within
   * `size`). The returned array is handed to the transport and must not be modified afterwards.
   */
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * The same bytes as `read`, as consecutive pieces totalling `length`: a device that receives data in
   * pieces (an NBD client) hands them on without joining them into one new array. Optional; the pieces
   * are handed to the transport like `read`'s result.
   */
  readPieces?(offset: number, length: number): Promise<Uint8Array[]>;
  /** Writes `data` at `offset`; with `fua` the data must be durable before the promise resolves. */
  write?(offset: number, data: Uint8Array, options?: { fua?: boolean }): Promise<void>;
  /** Makes every completed write durable. */
  flush?(): Promise<void>;
  /** Hint that the range is no longer needed; its content is undefined until it is written again. */
  trim?(offset: number, length: number): Promise<void>;
}

/** The NBD protocol's default size constraints (proto.md "Size constraints"). */
export const defaultBlockSize: BlockSizeConstraints = Object.freeze({
  minimum: 1,
  preferred: 4096,
  maximum: 32 * 1024 * 1024,
});

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** Throws a TypeError naming the problem when `device` is not a usable block device. */
export function checkBlockDevice(device: BlockDevice): void {
  if (!Number.isSafeInteger(device.size) || device.size < 0) {
    throw new TypeError(`block device size ${device.size} is not an integer between 0 and 2^53 - 1`);
  }
  const bs = device.blockSize;
  if (bs) {
    if (!isPowerOfTwo(bs.minimum) || bs.minimum > 65536) {
      throw new TypeError(`block size minimum ${bs.minimum} is not a power of two up to 65536`);
    }
    if (!isPowerOfTwo(bs.preferred) || bs.preferred < Math.max(bs.minimum, 512)) {
      throw new TypeError(`preferred block size ${bs.preferred} is not a power of two ≥ max(minimum, 512)`);
    }
    if (!Number.isInteger(bs.maximum) || bs.maximum < bs.preferred || bs.maximum > 0xffffffff) {
      throw new TypeError(`maximum payload ${bs.maximum} is not an integer between preferred and 2^32 - 1`);
    }
  }
  if (!device.readOnly && typeof device.write !== 'function') {
    throw new TypeError('a writable block device needs a write() method');
  }
}
