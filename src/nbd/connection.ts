/**
 * The byte transport under an NBD server or client: a reliable, ordered byte stream (a Unix or TCP
 * socket, a WebSocket's binary frames, a pair of pipes). Message boundaries mean nothing; NBD frames
 * itself. The interface is pull-based so that a slow consumer applies backpressure: nothing is read
 * from the transport until the protocol code asks for it.
 *
 * Contract for implementations:
 * - `read()` resolves with the next chunk of bytes (never empty) or `null` at the end of the stream.
 *   The chunk then belongs to the caller: the transport must not reuse or modify its memory. Calls to
 *   `read()` are never concurrent. After `close()`, a pending or later `read()` resolves `null`. A
 *   transport failure (other than the peer simply going away) may reject.
 * - `write(data)` queues `data` in order and resolves when the transport can take more; it rejects once
 *   the transport is closed or broken. `data` belongs to the transport from then on: the caller does
 *   not modify it afterwards. Writes are made one at a time (the next after the previous resolved).
 * - `close()` flushes what was written, ends the stream and releases the transport; it is idempotent.
 */
export interface NbdConnection {
  read(): Promise<Uint8Array | null>;
  write(data: Uint8Array): Promise<void>;
  close(): void;
}
