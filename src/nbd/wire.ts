/**
 * Exact 64-bit conversions and the small encoding helpers under protocol.ts's wire structures. Sizes and
 * offsets travel as unsigned 64-bit big-endian integers; in JavaScript they are numbers, which are exact
 * up to 2^53 - 1. Conversions go through BigInt with an explicit range check, never through 32-bit
 * shifts (`x >>> 32` silently truncates, which is how webui-vue broke images larger than 4 GiB).
 */

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** The unsigned 64-bit value as a number, or `undefined` when it is beyond 2^53 - 1. */
export function u64ToSafeNumber(value: bigint): number | undefined {
  return value <= MAX_SAFE ? Number(value) : undefined;
}

/** Writes `value` (a non-negative safe integer) as an unsigned 64-bit big-endian value at `offset`. */
export function setU64(view: DataView, offset: number, value: number): void {
  view.setBigUint64(offset, toU64(value));
}

/** `value` as a BigInt after checking that it is a non-negative safe integer. */
export function toU64(value: number): bigint {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${value} is not a non-negative integer below 2^53`);
  }
  return BigInt(value);
}

export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: false });

export function encodeUtf8(text: string): Uint8Array {
  return encoder.encode(text);
}

export function decodeUtf8(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

/** The first bytes of `bytes` as hex and printable ASCII, for error messages about garbage input. */
export function describeBytes(bytes: Uint8Array, limit = 16): string {
  const shown = bytes.subarray(0, limit);
  let hex = '';
  let ascii = '';
  for (const byte of shown) {
    hex += byte.toString(16).padStart(2, '0');
    ascii += byte >= 0x20 && byte < 0x7f ? String.fromCharCode(byte) : '.';
  }
  return `0x${hex}${bytes.length > limit ? '…' : ''} ("${ascii}")`;
}
