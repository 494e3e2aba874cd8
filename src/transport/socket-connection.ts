/**
 * `NbdConnection` over a Node stream socket (a Unix or TCP socket, or any byte Duplex): how the service
 * speaks NBD to its sources and to the host.
 */
import type { Duplex } from 'node:stream';
import type { NbdConnection } from '../nbd/connection.ts';

/**
 * Bytes queued in the socket below which `write()` resolves at once. Above the socket's own 16 KiB
 * high-water mark, so that a reply's pieces are queued together (one system call) rather than each
 * waiting for the previous one to drain; bounded, so a peer that does not read still stops the writer.
 */
const WRITE_QUEUE_BYTES = 1024 * 1024;

/** Errors that just mean the peer went away; reading reports them as the end of the stream. */
const PEER_GONE = new Set(['ECONNRESET', 'EPIPE', 'ERR_STREAM_PREMATURE_CLOSE']);

/**
 * Wraps a connected socket. Nothing is read from it until `read()` is called, so a slow consumer leaves
 * data in the kernel and the peer is throttled; `write()` resolves when the socket's buffer is below
 * WRITE_QUEUE_BYTES. `close()` flushes pending writes, ends the stream and destroys the socket.
 */
export function connectionFromSocket(socket: Duplex): NbdConnection {
  socket.pause();
  let ended = false;
  let closed = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  socket.on('readable', notify);
  socket.on('end', () => {
    ended = true;
    notify();
  });
  socket.on('close', () => {
    ended = true;
    notify();
  });
  socket.on('error', (error: Error & { code?: string }) => {
    if (!PEER_GONE.has(error.code ?? '')) failure = error;
    ended = true;
    notify();
  });

  return {
    async read(): Promise<Uint8Array | null> {
      for (;;) {
        if (closed) return null;
        const chunk: unknown = socket.read();
        if (chunk !== null) {
          if (typeof chunk === 'string') throw new TypeError('NBD connection delivered text, not bytes');
          const bytes = chunk as Uint8Array;
          if (bytes.byteLength === 0) continue;
          // A plain Uint8Array view: the protocol code relies on Uint8Array semantics only.
          return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        }
        if (failure) throw failure;
        if (ended || socket.destroyed || socket.readableEnded) return null;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
    },

    write(data: Uint8Array): Promise<void> {
      if (closed || socket.destroyed || socket.writableEnded) {
        return Promise.reject(new Error('NBD connection is closed'));
      }
      return new Promise<void>((resolve, reject) => {
        let settled = false;
        const finish = (error?: Error | null) => {
          if (settled) return;
          settled = true;
          socket.off('drain', onDrain);
          socket.off('close', onClose);
          if (error) reject(error);
          else resolve();
        };
        const onDrain = () => finish();
        const onClose = () => finish(new Error('NBD connection closed while writing'));
        // What is written in one tick (a reply's header and payload pieces, a burst of requests) leaves
        // in one system call instead of one each.
        if (!corked) {
          corked = true;
          socket.cork();
          process.nextTick(uncork);
        }
        socket.write(data, (error) => {
          if (error) finish(error);
        });
        if (socket.writableLength <= WRITE_QUEUE_BYTES) finish();
        else {
          socket.once('drain', onDrain);
          socket.once('close', onClose);
        }
      });
    },

    close(): void {
      if (closed) return;
      closed = true;
      notify();
      if (socket.destroyed) return;
      // Send what is queued, then release the socket; a peer that never reads cannot hold it open.
      const timer = setTimeout(() => socket.destroy(), 5000);
      timer.unref?.();
      socket.once('close', () => clearTimeout(timer));
      socket.end(() => socket.destroy());
    },
  };
}
