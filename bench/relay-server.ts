/**
 * A relay under test, in its own process so its CPU time is measured alone:
 * `bridge` — HTTPS + WebSocket into our Relay (what /nbd/<n> runs per session after authentication),
 * `tls` — a plain Node TLS socket piped into the Unix socket (the baseline; also the qd1_nbdkit row's TLS
 *   pipe in front of nbdkit).
 * Usage: relay-server.ts bridge|tls <cert.pem> <key.pem> <unix-socket>; prints `listening <port>`.
 */
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { WebSocketServer } from 'ws';
import { defaultLimits, Relay } from '../src/bridge/relay.ts';

const [kind, certFile, keyFile, target] = process.argv.slice(2);
const credentials = {
  cert: fs.readFileSync(certFile!),
  key: fs.readFileSync(keyFile!),
  minVersion: 'TLSv1.2' as const,
};

let listener: net.Server;
if (kind === 'bridge') {
  listener = https.createServer(credentials);
  const wss = new WebSocketServer({
    server: listener as https.Server,
    maxPayload: defaultLimits.maxMessage,
    perMessageDeflate: false,
  });
  wss.on('connection', (ws) => {
    const relay = new Relay(ws, defaultLimits);
    relay.attach(net.connect(target!));
  });
} else if (kind === 'tls') {
  // Nagle off, as https.createServer (the bridge) has it. The tls row sends nothing back, so this changes
  // nothing there; behind qd1_nbdkit, a reply's second TLS record would wait for a delayed ACK (40 ms).
  listener = tls.createServer({ ...credentials, noDelay: true }, (socket) => {
    const unix = net.connect(target!);
    socket.pipe(unix);
    unix.pipe(socket);
  });
} else {
  throw new Error(`unknown relay ${kind}`);
}
listener.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening ${(listener.address() as net.AddressInfo).port}\n`);
});
process.once('SIGINT', () => process.exit(0));
