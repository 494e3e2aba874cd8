/** Where a byte range meets one fixed-size chunk of a sparse store. */
export interface ChunkSpan {
  index: number;
  /** Device offset of the chunk's first byte. */
  chunkStart: number;
  /** The part of the range inside this chunk, as device offsets [from, to). */
  from: number;
  to: number;
}

/**
 * The pieces of [offset, offset + length) in each `chunkSize` chunk, in order: how sparse stores
 * (the in-memory device, the browser's write overlay) walk a request.
 */
export function* chunkSpans(offset: number, length: number, chunkSize: number): Generator<ChunkSpan> {
  const end = offset + length;
  for (let index = Math.floor(offset / chunkSize); index * chunkSize < end; index++) {
    const chunkStart = index * chunkSize;
    yield {
      index,
      chunkStart,
      from: Math.max(offset, chunkStart),
      to: Math.min(end, chunkStart + chunkSize),
    };
  }
}
