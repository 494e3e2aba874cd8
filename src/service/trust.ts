import { X509Certificate } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { PrecheckError } from './errors.ts';

/**
 * What a Legacy slot trusts for https:// images (VirtualMedia v1_4's `VerifyCertificate` and
 * `Certificates`): whether the image server's certificate is verified at all, and the CA certificates
 * an administrator added for it, on top of the system's and VMEDIA_CA_BUNDLE's. SMB has no certificates:
 * an smb:// image is unaffected.
 */
export interface SlotTrust {
  verifyCertificate: boolean;
  /** PEM, one certificate each, as normalized by `normalizeCertificate`. */
  certificates: readonly string[];
}

/** Verification on and nothing added: the secure default (DMTF's schema suggests false). */
export const DEFAULT_TRUST: SlotTrust = Object.freeze({ verifyCertificate: true, certificates: [] });

/** Enough for any real chain of CAs; bounds the state file and the D-Bus property. */
export const MAX_CERTIFICATES = 16;
const MAX_PEM_BYTES = 16 * 1024;

/** One PEM certificate, re-encoded by OpenSSL; anything else is refused with the reason. */
export function normalizeCertificate(pem: string): string {
  if (Buffer.byteLength(pem) > MAX_PEM_BYTES) throw PrecheckError.invalid('the certificate is over 16 KiB');
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0;
  if (blocks !== 1) throw PrecheckError.invalid('expected exactly one PEM certificate');
  try {
    return new X509Certificate(pem).toString();
  } catch (error) {
    throw PrecheckError.invalid(`not a valid PEM certificate: ${(error as Error).message}`);
  }
}

/**
 * Each Legacy slot's trust, kept in `<state>/trust/<SlotId>.json` so that it outlives a restart (an
 * administrator sets it once). Written whole to a temporary file and renamed, so a crash leaves the old
 * or the new one.
 */
export class TrustStore {
  private readonly trust = new Map<string, SlotTrust>();

  private constructor(private readonly dir: string) {}

  static async open(dir: string, slotIds: readonly string[]): Promise<TrustStore> {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const store = new TrustStore(dir);
    for (const slotId of slotIds) store.trust.set(slotId, await store.read(slotId));
    return store;
  }

  get(slotId: string): SlotTrust {
    return this.trust.get(slotId) ?? DEFAULT_TRUST;
  }

  async set(slotId: string, trust: SlotTrust): Promise<void> {
    const file = this.file(slotId);
    const temporary = `${file}.new`;
    await fs.writeFile(temporary, `${JSON.stringify(trust, null, 2)}\n`, { mode: 0o600 });
    await fs.rename(temporary, file);
    this.trust.set(slotId, Object.freeze({ ...trust, certificates: Object.freeze([...trust.certificates]) }));
  }

  private file(slotId: string): string {
    return path.join(this.dir, `${slotId}.json`);
  }

  /** The saved trust, or the default when there is none; a file that does not parse is an error. */
  private async read(slotId: string): Promise<SlotTrust> {
    let text: string;
    try {
      text = await fs.readFile(this.file(slotId), 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return DEFAULT_TRUST;
      throw error;
    }
    const saved = JSON.parse(text) as Partial<SlotTrust>;
    if (typeof saved.verifyCertificate !== 'boolean' || !Array.isArray(saved.certificates)) {
      throw new Error(`${this.file(slotId)} is not a slot trust file`);
    }
    return Object.freeze({
      verifyCertificate: saved.verifyCertificate,
      certificates: Object.freeze(saved.certificates.map((pem) => normalizeCertificate(String(pem)))),
    });
  }
}
