import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { generateSelfSigned } from '../../src/tls/self-signed.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

let server: TestServer;
before(async () => {
  server = await startTestServer();
});
after(() => server.close());

const port = () => Number(new URL(server.url).port);
const run = promisify(execFile);

test('the generated certificate is ECDSA P-256, self-signed, for localhost, 127.0.0.1 and ::1', async () => {
  const certificate = new X509Certificate(server.ca);
  assert.equal(certificate.publicKey.asymmetricKeyType, 'ec');
  assert.equal(certificate.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  assert.ok(certificate.verify(certificate.publicKey), 'self-signed');
  assert.equal(certificate.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
  assert.equal(certificate.checkHost('localhost'), 'localhost');
  const key = await stat(path.join(server.stateDir, 'certs', 'server.key'));
  assert.equal(key.mode & 0o777, 0o600);
});

test('the certificate is kept across restarts', async () => {
  const again = await startTestServer({ stateDir: server.stateDir });
  try {
    assert.equal(again.ca, server.ca);
  } finally {
    await again.close();
  }
});

test('TLS 1.2 and 1.3 are accepted; TLS 1.1 is refused', async () => {
  const connect = (version: tls.SecureVersion) =>
    new Promise<string | null>((resolve, reject) => {
      const socket = tls.connect({
        host: '127.0.0.1',
        port: port(),
        ca: server.ca,
        minVersion: version,
        maxVersion: version,
      });
      socket.once('secureConnect', () => {
        resolve(socket.getProtocol());
        socket.end();
      });
      socket.once('error', reject);
    });
  assert.equal(await connect('TLSv1.2'), 'TLSv1.2');
  assert.equal(await connect('TLSv1.3'), 'TLSv1.3');
  await assert.rejects(connect('TLSv1.1'));
});

/** Whether `openssl s_client` completes a handshake offering only `cipher` (TLS 1.2) or `suite` (1.3). */
function handshakes(args: string[]): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(
      'openssl',
      ['s_client', '-connect', `127.0.0.1:${port()}`, '-servername', 'localhost', ...args],
      { timeout: 10_000 },
      (error, stdout) =>
        resolve(!error && /(?:Cipher is |Cipher\s*:\s*)(?!0000|\(NONE\))[A-Z0-9_-]+/.test(stdout)),
    ).stdin!.end('');
  });
}

test('openssl s_client: TLS 1.2 offers only forward-secret AEAD suites; TLS 1.3 works; 1.1 and CBC do not', async () => {
  const { stdout } = await run('openssl', ['ciphers', '-tls1_2', 'ALL:COMPLEMENTOFALL:@SECLEVEL=0']);
  const tls12 = stdout
    .trim()
    .split(':')
    .filter((name) => !name.startsWith('TLS_'));
  assert.ok(tls12.length > 50, `openssl knows ${tls12.length} TLS 1.2 suites`);
  const accepted: string[] = [];
  for (let i = 0; i < tls12.length; i += 16) {
    const batch = tls12.slice(i, i + 16);
    const results = await Promise.all(
      batch.map((cipher) => handshakes(['-tls1_2', '-cipher', `${cipher}:@SECLEVEL=0`])),
    );
    accepted.push(...batch.filter((_, index) => results[index]));
  }
  // The certificate is ECDSA: of the ECDHE suites, the ECDSA ones are those a client can get.
  assert.deepEqual(accepted.sort(), [
    'ECDHE-ECDSA-AES128-GCM-SHA256',
    'ECDHE-ECDSA-AES256-GCM-SHA384',
    'ECDHE-ECDSA-CHACHA20-POLY1305',
  ]);
  for (const suite of ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']) {
    assert.equal(await handshakes(['-tls1_3', '-ciphersuites', suite]), true, suite);
  }
  assert.equal(await handshakes(['-tls1_1', '-cipher', 'ALL:@SECLEVEL=0']), false, 'TLS 1.1');
});

test('plain HTTP on the port gets no HTTP answer', async () => {
  const answer = await new Promise<string>((resolve) => {
    const socket = net.connect(port(), '127.0.0.1', () =>
      socket.write('GET /redfish/v1/ HTTP/1.1\r\nHost: x\r\n\r\n'),
    );
    let received = '';
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
    });
    socket.on('close', () => resolve(received));
    socket.on('error', () => resolve(received));
  });
  assert.doesNotMatch(answer, /^HTTP\//);
  assert.ok(!answer.includes('RootService'));
});

test('a user-provided certificate and key are served instead of a generated one', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vmedia-tls-'));
  const own = await generateSelfSigned();
  await writeFile(path.join(dir, 'own.crt'), own.cert);
  await writeFile(path.join(dir, 'own.key'), own.key);
  const custom = await startTestServer({
    tls: { certFile: path.join(dir, 'own.crt'), keyFile: path.join(dir, 'own.key') },
  });
  try {
    const served = await new Promise<string>((resolve, reject) => {
      const socket = tls.connect(
        { host: '127.0.0.1', port: Number(new URL(custom.url).port), ca: own.cert },
        () => {
          resolve(socket.getPeerX509Certificate()?.fingerprint256 ?? '');
          socket.end();
        },
      );
      socket.once('error', reject);
    });
    assert.equal(served, new X509Certificate(own.cert).fingerprint256);
  } finally {
    await custom.close();
    await rm(dir, { recursive: true, force: true });
  }
});
