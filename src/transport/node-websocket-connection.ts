import type { RawData, WebSocket } from 'ws';
import { PEER_HIGH_WATER_MARK, PEER_LOW_WATER_MARK, PEER_MAX_MESSAGE_BYTES } from '../contract/bridge.ts';
import type { NbdConnection } from '../nbd/connection.ts';

/** How the WebSocket ended: the close code and reason the other side (or we) gave. */
export interface NodeWebSocketEnd {
  code: number;
  reason: string;
}

/**
 * An `NbdConnection` over a Node `ws` WebSocket carrying binary frames: the CLI's side of the `/nbd`
 * bridge (the browser has its own, BrowserWebSocketConnection, over the DOM WebSocket, which cannot
 * pause). Both directions are bounded: reading stops when more than PEER_HIGH_WATER_MARK waits to be
 * read, and `write()` waits while more than that is queued for the network. Messages sent are at most
 * PEER_MAX_MESSAGE_BYTES (src/contract/bridge.ts), which the bridge accepts.
 */
export class NodeWebSocketConnection implements NbdConnection {
  /** Resolves once the WebSocket has closed, from either side, with the code and reason given. */
  readonly ended: Promise<NodeWebSocketEnd>;
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private paused = false;
  private closed = false;
  private wake: (() => void) | undefined;

  constructor(private readonly ws: WebSocket) {
    ws.on('message', this.onMessage);
    this.ended = new Promise((resolve) => {
      ws.once('close', (code: number, reason: Buffer) => {
        this.closed = true;
        this.notify();
        resolve({ code, reason: reason.toString() });
      });
    });
    // The close event that follows every error carries what the caller needs.
    ws.on('error', () => undefined);
  }

  async read(): Promise<Uint8Array | null> {
    for (;;) {
      const chunk = this.queue.shift();
      if (chunk) {
        this.queued -= chunk.length;
        if (this.paused && this.queued <= PEER_LOW_WATER_MARK) {
          this.paused = false;
          this.ws.resume();
        }
        return chunk;
      }
      if (this.closed) return null;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  write(data: Uint8Array): Promise<void> {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) {
      return Promise.reject(new Error('the WebSocket is closed'));
    }
    let offset = 0;
    for (; offset + PEER_MAX_MESSAGE_BYTES < data.length; offset += PEER_MAX_MESSAGE_BYTES) {
      this.ws.send(data.subarray(offset, offset + PEER_MAX_MESSAGE_BYTES));
    }
    const last = data.subarray(offset);
    if (this.ws.bufferedAmount + last.length <= PEER_HIGH_WATER_MARK) {
      this.ws.send(last);
      return Promise.resolve();
    }
    // Over the mark: resolve once the last message has been handed to the network.
    return new Promise((resolve, reject) => {
      this.ws.send(last, (error) => (error ? reject(error) : resolve()));
    });
  }

  close(code = 1000, reason = 'the NBD session ended'): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    this.queued = 0;
    this.notify();
    // Queued messages go out before the close frame.
    this.ws.close(code, reason);
  }

  private readonly onMessage = (data: RawData, isBinary: boolean): void => {
    if (!isBinary) {
      this.close(1003, 'binary frames only');
      return;
    }
    const chunk = data as Buffer;
    if (chunk.length === 0 || this.closed) return;
    this.queue.push(chunk);
    this.queued += chunk.length;
    if (!this.paused && this.queued > PEER_HIGH_WATER_MARK) {
      this.paused = true;
      this.ws.pause();
    }
    this.notify();
  };

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
