import { serveNbd } from '../nbd/server/serve.ts';
import {
  BrowserWebSocketConnection as WebSocketConnection,
  type BrowserWebSocketEnd as WebSocketEnd,
} from '../transport/browser-websocket-connection.ts';
import { FileDevice } from './file-device.ts';

/** Reads and writes in flight: enough to keep the WebSocket busy while `File` reads are pending. */
const MAX_IN_FLIGHT = 16;

/** How a mount ended: the WebSocket's close, and the NBD server's failure if it had one. */
export interface MountEnd extends WebSocketEnd {
  error?: unknown;
}

/**
 * Proxy mode in the browser (docs/contract.md §4 and §5): this page is the NBD server for the chosen file, on the
 * slot's WebSocket; the BMC end of the socket is the NBD client that presents the medium to the host.
 */
export class ProxyMount {
  /** Payload bytes the host has requested (read) and sent (written). */
  readonly stats = { bytesRead: 0, bytesWritten: 0 };
  readonly device: FileDevice;
  /** Resolves when the mount is over, whoever ended it. */
  readonly ended: Promise<MountEnd>;
  private readonly connection: WebSocketConnection;
  private readonly opened: Promise<boolean>;

  /**
   * Connects to the slot's endpoint. A cookie session authenticates a WebSocket with its XSRF token as
   * the subprotocol, the one header a browser lets a page set on the upgrade request.
   */
  constructor(endpoint: string, file: File, options: { writable: boolean; xsrfToken: string }) {
    this.device = new FileDevice(file, { writable: options.writable });
    const url = new URL(endpoint, location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(url, [options.xsrfToken]);
    this.connection = new WebSocketConnection(socket);
    this.opened = new Promise((resolve) => {
      socket.onopen = () => resolve(true);
      void this.connection.ended.then(() => resolve(false));
    });
    this.ended = this.serve();
  }

  /** Resolves true once the server accepted the WebSocket, false if it refused or failed. */
  get connected(): Promise<boolean> {
    return this.opened;
  }

  /** Ends the mount from this side: the server sees the WebSocket close and frees the slot. */
  close(): void {
    this.connection.close();
  }

  private async serve(): Promise<MountEnd> {
    let error: unknown;
    if (await this.opened) {
      try {
        await serveNbd(this.connection, () => this.device, {
          maxInFlight: MAX_IN_FLIGHT,
          onRequest: ({ type, length }) => {
            if (type === 'read') this.stats.bytesRead += length;
            else if (type === 'write') this.stats.bytesWritten += length;
          },
        });
      } catch (failure) {
        error = failure;
        this.connection.close(1002, 'NBD protocol error');
      }
    }
    const end = await this.connection.ended;
    return error === undefined ? end : { ...end, error };
  }
}
