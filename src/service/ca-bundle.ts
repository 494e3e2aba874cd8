import fs from 'node:fs/promises';
import path from 'node:path';

/** Where Debian/Ubuntu and Fedora/RHEL keep the system trust store as one PEM file. */
const SYSTEM_BUNDLES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt'];

/**
 * curl's `cainfo` replaces the trust store rather than adding to it, so the extra CAs of
 * VMEDIA_CA_BUNDLE are appended to the system bundle in `<runtime>/ca-bundle.pem`. Without extra
 * CAs, curl's default store is used as is (undefined).
 */
export async function prepareCaBundle(
  extraBundle: string | undefined,
  runtimeDir: string,
): Promise<string | undefined> {
  if (!extraBundle) return undefined;
  const extra = await fs.readFile(extraBundle, 'utf8').catch((error: Error) => {
    throw new Error(`cannot read VMEDIA_CA_BUNDLE ${extraBundle}: ${error.message}`);
  });
  if (!extra.includes('-----BEGIN CERTIFICATE-----')) {
    throw new Error(`VMEDIA_CA_BUNDLE ${extraBundle} holds no PEM certificate`);
  }
  let system = '';
  for (const candidate of SYSTEM_BUNDLES) {
    system = await fs.readFile(candidate, 'utf8').catch(() => '');
    if (system) break;
  }
  const combined = path.join(runtimeDir, 'ca-bundle.pem');
  await fs.writeFile(combined, `${system.trimEnd()}\n${extra.trim()}\n`, { mode: 0o644 });
  return combined;
}
