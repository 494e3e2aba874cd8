import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestCertificates {
  /** PEM of the CA that signed `cert` — what a client must trust. */
  caCertFile: string;
  caCert: string;
  key: string;
  cert: string;
}

/**
 * A throw-away CA and a server certificate for 127.0.0.1/localhost signed by it, generated with the
 * openssl CLI in `directory` (which the caller removes).
 */
export async function createTestCertificates(
  directory: string,
  commonName = 'vmedia test CA',
): Promise<TestCertificates> {
  const file = (name: string) => path.join(directory, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', [
    'req',
    '-x509',
    ...ec,
    '-keyout',
    file('ca.key'),
    '-out',
    file('ca.crt'),
    '-days',
    '2',
    '-subj',
    `/CN=${commonName}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await run('openssl', [
    'req',
    ...ec,
    '-keyout',
    file('server.key'),
    '-out',
    file('server.csr'),
    '-subj',
    '/CN=localhost',
  ]);
  await fs.writeFile(
    file('server.ext'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n',
  );
  await run('openssl', [
    'x509',
    '-req',
    '-in',
    file('server.csr'),
    '-CA',
    file('ca.crt'),
    '-CAkey',
    file('ca.key'),
    '-CAcreateserial',
    '-out',
    file('server.crt'),
    '-days',
    '2',
    '-extfile',
    file('server.ext'),
  ]);
  return {
    caCertFile: file('ca.crt'),
    caCert: await fs.readFile(file('ca.crt'), 'utf8'),
    key: await fs.readFile(file('server.key'), 'utf8'),
    cert: await fs.readFile(file('server.crt'), 'utf8'),
  };
}
