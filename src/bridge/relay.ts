import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { RawData, WebSocket } from 'ws';
import { MAX_MESSAGE_BYTES, RELAY_HIGH_WATER_MARK, RELAY_LOW_WATER_MARK } from '../contract/bridge.ts';

/** Close codes of RFC 6455 §7.4.1 the bridge uses. */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  UnsupportedData: 1003,
  PolicyViolation: 1008,
  MessageTooBig: 1009,
  InternalError: 1011,
} as const;

export interface RelayLimits {
  /** Bytes queued towards one side above which the other side is no longer read. */
  highWaterMark: number;
  /** Queued bytes at or below which reading resumes. */
  lowWaterMark: number;
  /** The WebSocket server's maxPayload: the largest message that can arrive after a pause. */
  maxMessage: number;
}

export const defaultLimits: RelayLimits = Object.freeze({
  highWaterMark: RELAY_HIGH_WATER_MARK,
  lowWaterMark: RELAY_LOW_WATER_MARK,
  maxMessage: MAX_MESSAGE_BYTES,
});

export interface RelayStats {
  /** Bytes relayed from the WebSocket into the Unix socket, and the other way. */
  bytesToSocket: number;
  bytesToWebSocket: number;
  /** Bytes queued in this process towards the Unix socket (including before it is attached). */
  socketBuffered: number;
  /** Bytes queued in this process towards the WebSocket peer. */
  webSocketBuffered: number;
  /** The largest values those two reached: the bound tests assert. */
  peakSocketBuffered: number;
  peakWebSocketBuffered: number;
  /** Whether reading is currently paused on each side. */
  webSocketPaused: boolean;
  socketPaused: boolean;
}

export type RelayEndCause = 'websocket' | 'socket' | 'local';

export interface RelayEnd {
  /** Which side ended the relay first. */
  by: RelayEndCause;
  code: number;
  reason: string;
}

/** Send options shared by every chunk (not one object per send). */
const BINARY = Object.freeze({ binary: true });

/** How long a closing WebSocket peer gets to answer the close frame before its socket is destroyed. */
const CLOSE_GRACE_MS = 500;

/**
 * Relays bytes between a WebSocket (binary messages) and a stream socket (the NBD client of the host
 * side), with bounded memory: when the bytes queued towards one side exceed the high-water mark, the
 * other side is paused until the queue drains. Unlike bmcweb's fixed buffers (its open bug #203:
 * overflow under `dd` read stress), nothing here grows with the peer's sending rate.
 *
 * The WebSocket may be given before the socket exists: messages are then held (the WebSocket paused)
 * until `attach()`, because an NBD server speaks first while the host side connects only later.
 *
 * When the socket side ends, the WebSocket is left open (paused) for the owner to close with
 * `close(code, reason)`: only the owner knows why the host went away (a failed mount, an eject).
 *
 * Events: `pause`/`resume` with `'websocket' | 'socket'` (the side whose reading stopped/restarted);
 * `end` with a {@link RelayEnd}, once.
 */
export class Relay extends EventEmitter {
  private socket: Socket | undefined;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private endResult: RelayEnd | undefined;
  private corked = false;
  private readonly counters = {
    bytesToSocket: 0,
    bytesToWebSocket: 0,
    peakSocketBuffered: 0,
    peakWebSocketBuffered: 0,
    webSocketPaused: false,
    socketPaused: false,
  };
  /** Resolves when the relay ended, whichever side ended it. */
  readonly ended: Promise<RelayEnd>;
  private resolveEnded!: (end: RelayEnd) => void;

  constructor(
    private readonly ws: WebSocket,
    readonly limits: RelayLimits = defaultLimits,
  ) {
    super();
    this.ended = new Promise((resolve) => {
      this.resolveEnded = resolve;
    });
    ws.on('message', this.onMessage);
    ws.once('close', this.onWebSocketClose);
    // The close event follows every error; the listener only keeps the error from being thrown.
    ws.on('error', () => undefined);
    this.pauseWebSocket();
  }

  /** Starts relaying to `socket`: flushes what the WebSocket sent so far and resumes reading it. */
  attach(socket: Socket): void {
    if (this.socket) throw new Error('relay already attached');
    if (this.endResult) {
      socket.destroy();
      return;
    }
    this.socket = socket;
    socket.on('data', this.onSocketData);
    socket.on('drain', this.onSocketDrain);
    socket.once('close', this.onSocketClose);
    socket.on('error', () => undefined);
    for (const chunk of this.pending) this.writeToSocket(chunk);
    this.pending = [];
    this.pendingBytes = 0;
    if (socket.writableLength <= this.limits.lowWaterMark) this.resumeWebSocket();
  }

  /**
   * Ends the relay from this side: the WebSocket gets `code`/`reason`, the socket is destroyed. After
   * the socket side ended, this closes the WebSocket that was left open.
   */
  close(code: number, reason: string): void {
    if (this.endResult) closeWebSocket(this.ws, code, reason);
    else this.finish({ by: 'local', code, reason });
  }

  get isEnded(): boolean {
    return this.endResult !== undefined;
  }

  stats(): RelayStats {
    return {
      ...this.counters,
      socketBuffered: this.socketBuffered(),
      webSocketBuffered: this.ws.bufferedAmount,
    };
  }

  private socketBuffered(): number {
    return this.socket ? this.socket.writableLength : this.pendingBytes;
  }

  private readonly onMessage = (data: RawData, isBinary: boolean): void => {
    // Already-parsed messages can still arrive after the end; there is nowhere to send them.
    if (this.endResult) return;
    if (!isBinary) {
      this.finish({ by: 'local', code: CloseCode.UnsupportedData, reason: 'binary frames only' });
      return;
    }
    // ws hands over a Buffer for binary messages (binaryType 'nodebuffer', the default).
    const chunk = data as Buffer;
    if (this.socket) {
      this.writeToSocket(chunk);
    } else {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
      this.notePeakSocket(this.pendingBytes);
    }
  };

  private writeToSocket(chunk: Buffer): void {
    const socket = this.socket!;
    // The messages one TLS record carries arrive in one tick (an NBD reply's header and its data, a
    // burst of requests): one system call for all of them, so the reader wakes once, not once each.
    if (!this.corked) {
      this.corked = true;
      socket.cork();
      process.nextTick(this.uncorkSocket);
    }
    socket.write(chunk);
    this.counters.bytesToSocket += chunk.length;
    const queued = socket.writableLength;
    this.notePeakSocket(queued);
    if (queued > this.limits.highWaterMark) this.pauseWebSocket();
  }

  private readonly uncorkSocket = (): void => {
    this.corked = false;
    this.socket?.uncork();
  };

  private notePeakSocket(queued: number): void {
    if (queued > this.counters.peakSocketBuffered) this.counters.peakSocketBuffered = queued;
  }

  // 'drain' fires once the socket's queue is empty, which is below any low-water mark.
  private readonly onSocketDrain = (): void => {
    if (this.counters.webSocketPaused && !this.endResult) this.resumeWebSocket();
  };

  private readonly onSocketData = (chunk: Buffer): void => {
    // The callback is one shared function: no allocation per chunk.
    this.ws.send(chunk, BINARY, this.onWebSocketSent);
    this.counters.bytesToWebSocket += chunk.length;
    const queued = this.ws.bufferedAmount;
    if (queued > this.counters.peakWebSocketBuffered) this.counters.peakWebSocketBuffered = queued;
    if (queued > this.limits.highWaterMark && !this.counters.socketPaused) {
      this.counters.socketPaused = true;
      this.socket!.pause();
      this.emit('pause', 'socket');
    }
  };

  // ws has no 'drain' event; each completed send is the moment its queue shrinks.
  private readonly onWebSocketSent = (): void => {
    if (this.counters.socketPaused && !this.endResult && this.ws.bufferedAmount <= this.limits.lowWaterMark) {
      this.counters.socketPaused = false;
      this.socket!.resume();
      this.emit('resume', 'socket');
    }
  };

  private pauseWebSocket(): void {
    if (this.counters.webSocketPaused) return;
    this.counters.webSocketPaused = true;
    this.ws.pause();
    this.emit('pause', 'websocket');
  }

  private resumeWebSocket(): void {
    if (!this.counters.webSocketPaused) return;
    this.counters.webSocketPaused = false;
    this.ws.resume();
    this.emit('resume', 'websocket');
  }

  private readonly onWebSocketClose = (code: number, reason: Buffer): void => {
    this.finish({ by: 'websocket', code, reason: reason.toString() });
  };

  private readonly onSocketClose = (): void => {
    this.finish({ by: 'socket', code: CloseCode.GoingAway, reason: 'the host side disconnected' });
  };

  private finish(end: RelayEnd): void {
    if (this.endResult) return;
    this.endResult = end;
    this.pending = [];
    this.pendingBytes = 0;
    this.socket?.destroy();
    if (end.by === 'local') closeWebSocket(this.ws, end.code, end.reason);
    else if (end.by === 'socket') this.pauseWebSocket();
    this.emit('end', end);
    this.resolveEnded(end);
  }
}

/** Sends a close frame, and destroys the connection if the peer does not answer it promptly. */
function closeWebSocket(ws: WebSocket, code: number, reason: string): void {
  if (ws.readyState === ws.CLOSED || ws.readyState === ws.CLOSING) return;
  // A close reason is limited to 123 bytes (RFC 6455 §5.5); 120 leaves room for a cut UTF-8 sequence.
  ws.close(code, Buffer.from(reason).subarray(0, 120).toString());
  const timer = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
  timer.unref();
  ws.once('close', () => clearTimeout(timer));
}
