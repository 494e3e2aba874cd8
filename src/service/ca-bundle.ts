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
  const combined = path.join(runtimeDir, 'ca-bundle.pem');
  await fs.writeFile(combined, `${(await systemBundle()).trimEnd()}\n${extra.trim()}\n`, { mode: 0o644 });
  return combined;
}

/**
 * The bundle one mount trusts when its slot has CAs of its own (Redfish `Certificates`): the service's
 * bundle (or the system's) plus those, written to `file`.
 */
export async function writeSlotCaBundle(
  serviceBundle: string | undefined,
  certificates: readonly string[],
  file: string,
): Promise<void> {
  const base = serviceBundle ? await fs.readFile(serviceBundle, 'utf8') : await systemBundle();
  await fs.writeFile(file, `${base.trimEnd()}\n${certificates.map((c) => c.trim()).join('\n')}\n`, {
    mode: 0o644,
  });
}

async function systemBundle(): Promise<string> {
  for (const candidate of SYSTEM_BUNDLES) {
    const system = await fs.readFile(candidate, 'utf8').catch(() => '');
    if (system) return system;
  }
  return '';
}
