import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

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
    if (Date.parse(new X509Certificate(cert).validTo) > Date.now()) return { cert, key, generated: true };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  // Only a first start (or an expired certificate) needs the certificate builder: loaded then, not on
  // every start (it is a fifth of the server's code and stays resident once loaded).
  const { generateSelfSigned } = await import('./self-signed.ts');
  const { cert, key } = await generateSelfSigned();
  await mkdir(certsDir, { recursive: true, mode: 0o700 });
  await writeFile(keyFile, key, { mode: 0o600 });
  await writeFile(certFile, cert, { mode: 0o644 });
  return { cert, key, generated: true };
}
