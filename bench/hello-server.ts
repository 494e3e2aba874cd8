/**
 * The Redfish and startup rows' reference: a bare fastify HTTPS hello-world. The bench bundles it with
 * esbuild and runs it with plain node, as the stack runs from dist/. Usage: hello-server.ts <cert> <key>
 * [port] (default 0: any free port); prints `listening <port>`.
 */
import fs from 'node:fs';
import Fastify from 'fastify';

const [certFile, keyFile, port = '0'] = process.argv.slice(2);
const app = Fastify({ https: { cert: fs.readFileSync(certFile!), key: fs.readFileSync(keyFile!) } });
app.get('/', async () => ({ hello: 'world' }));
await app.listen({ host: '127.0.0.1', port: Number(port) });
process.stdout.write(`listening ${(app.server.address() as { port: number }).port}\n`);
process.once('SIGINT', () => void app.close().then(() => process.exit(0)));
