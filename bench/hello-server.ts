/** The Redfish row's reference: a bare fastify HTTPS hello-world. Usage: hello-server.ts <cert> <key>. */
import fs from 'node:fs';
import Fastify from 'fastify';

const [certFile, keyFile] = process.argv.slice(2);
const app = Fastify({ https: { cert: fs.readFileSync(certFile!), key: fs.readFileSync(keyFile!) } });
app.get('/', async () => ({ hello: 'world' }));
await app.listen({ host: '127.0.0.1', port: 0 });
process.stdout.write(`listening ${(app.server.address() as { port: number }).port}\n`);
process.once('SIGINT', () => void app.close().then(() => process.exit(0)));
