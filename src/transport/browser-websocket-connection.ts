/**
 * The browser's NBD transport, bundled into the web UI: no Node API here (the Node-free test checks it),
 * only the DOM WebSocket.
 */
import { PEER_HIGH_WATER_MARK, PEER_MAX_MESSAGE_BYTES } from '../contract/bridge.ts';
import type { NbdConnection } from '../nbd/connection.ts';

/** How the WebSocket ended: the close code and reason the other side (or we) gave. */
export interface BrowserWebSocketEnd {
  code: number;
  reason: string;
  wasClean: boolean;
}

const OPEN = 1;
/** Browsers have no "drain" event, so a blocked writer looks at `bufferedAmount` this often. */
const DRAIN_POLL_MS = 5;

/**
 * An `NbdConnection` over an open WebSocket carrying binary frames. Sending splits what is written into
 * messages of at most PEER_MAX_MESSAGE_BYTES (the bridge refuses messages over MAX_MESSAGE_BYTES, while a
 * READ reply may be up to 32 MiB; NBD is a byte stream, so the split means nothing to it), and applies
 * backpressure through `bufferedAmount`: `write()` waits while more than PEER_HIGH_WATER_MARK is queued.
 * Receiving cannot: a browser WebSocket has no way to pause, so incoming frames are queued — the bound
 * comes from the NBD client on the other side, which limits requests in flight.
 */
export class BrowserWebSocketConnection implements NbdConnection {
  /** Resolves once the socket has closed, from either side. */
  readonly ended: Promise<BrowserWebSocketEnd>;
  private readonly queue: Uint8Array[] = [];
  private waiting: ((chunk: Uint8Array | null) => void) | undefined;
  private closed = false;

  constructor(private readonly socket: WebSocket) {
    socket.binaryType = 'arraybuffer';
    socket.onmessage = ({ data }: MessageEvent) => {
      if (!(data instanceof ArrayBuffer)) {
        // docs/contract.md §4: binary frames only; a text frame is a broken peer, so the stream ends here.
        this.close(1003, 'binary frames only');
        return;
      }
      if (data.byteLength === 0) return;
      this.deliver(new Uint8Array(data));
    };
    this.ended = new Promise((resolve) => {
      socket.onclose = ({ code, reason, wasClean }) => {
        this.finish();
        resolve({ code, reason, wasClean });
      };
    });
    // The close event that always follows carries the useful code and reason.
    socket.onerror = () => {};
  }

  read(): Promise<Uint8Array | null> {
    const chunk = this.queue.shift();
    if (chunk) return Promise.resolve(chunk);
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }

  async write(data: Uint8Array): Promise<void> {
    if (this.closed || this.socket.readyState !== OPEN) throw new Error('the WebSocket is closed');
    for (let offset = 0; offset < data.length; offset += PEER_MAX_MESSAGE_BYTES) {
      this.socket.send(data.subarray(offset, offset + PEER_MAX_MESSAGE_BYTES));
    }
    while (this.socket.bufferedAmount > PEER_HIGH_WATER_MARK) {
      await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
      if (this.closed) throw new Error('the WebSocket closed');
    }
  }

  close(code = 1000, reason = 'done'): void {
    if (!this.closed) this.socket.close(code, reason);
    this.queue.length = 0;
    this.finish();
  }

  private deliver(chunk: Uint8Array): void {
    const waiting = this.waiting;
    if (waiting) {
      this.waiting = undefined;
      waiting(chunk);
    } else {
      this.queue.push(chunk);
    }
  }

  private finish(): void {
    this.closed = true;
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.(null);
  }
}
