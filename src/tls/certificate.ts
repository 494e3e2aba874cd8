import { randomBytes, webcrypto } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
// @peculiar/x509 resolves its ASN.1 codecs through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

export interface TlsMaterial {
  cert: string;
  key: string;
  /** Where the certificate came from: clients of a generated one must trust `cert` explicitly. */
  generated: boolean;
}

const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const validityDays = 825; // the longest lifetime browsers accept for a TLS server certificate

/** The certificate and key the server presents: the user's files if given, else a generated pair. */
export async function loadTlsMaterial(certsDir: string, provided?: TlsFiles): Promise<TlsMaterial> {
  if (provided) {
    return {
      cert: await readFile(provided.certFile, 'utf8'),
      key: await readFile(provided.keyFile, 'utf8'),
      generated: false,
    };
  }
  return ensureSelfSigned(certsDir);
}

/** `<certs>/server.crt` and `server.key` (0600), generated on first start and reused afterwards. */
export async function ensureSelfSigned(certsDir: string): Promise<TlsMaterial> {
  const certFile = path.join(certsDir, 'server.crt');
  const keyFile = path.join(certsDir, 'server.key');
  try {
    const [cert, key] = await Promise.all([readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')]);
    if (new x509.X509Certificate(cert).notAfter.getTime() > Date.now()) return { cert, key, generated: true };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const { cert, key } = await generateSelfSigned();
  await mkdir(certsDir, { recursive: true, mode: 0o700 });
  await writeFile(keyFile, key, { mode: 0o600 });
  await writeFile(certFile, cert, { mode: 0o644 });
  return { cert, key, generated: true };
}

/** A self-signed ECDSA P-256 server certificate for the loopback names (localhost, 127.0.0.1, ::1). */
export async function generateSelfSigned(): Promise<{ cert: string; key: string }> {
  const crypto = webcrypto as unknown as Crypto;
  const keys = await crypto.subtle.generateKey(algorithm, true, ['sign', 'verify']);
  const notBefore = new Date(Date.now() - 60_000);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: `01${randomBytes(15).toString('hex')}`,
      name: 'CN=vmedia BMC',
      notBefore,
      notAfter: new Date(notBefore.getTime() + validityDays * 86_400_000),
      signingAlgorithm: algorithm,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([
          { type: 'dns', value: 'localhost' },
          { type: 'ip', value: '127.0.0.1' },
          { type: 'ip', value: '::1' },
        ]),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey));
  const key = `-----BEGIN PRIVATE KEY-----\n${pkcs8
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .trimEnd()}\n-----END PRIVATE KEY-----\n`;
  return { cert: certificate.toString('pem'), key };
}
