import fs from 'node:fs/promises';
import { checkImageUrl, type ImageUrlPolicy, smbLocation } from '../../contract/image-url.ts';
import type { SlotConfig } from '../config.ts';
import type { Credentials } from '../credentials.ts';
import { PrecheckError } from '../errors.ts';
import type { MountContext } from '../slot.ts';
import type { SlotTrust } from '../trust.ts';
import { startKernelCifsSource } from './cifs-kernel.ts';
import { startUserspaceCifsSource } from './cifs-userspace.ts';
import { startHttpsSource } from './legacy-https.ts';
import type { MediumSource } from './source.ts';

/** How smb:// images are read: a kernel CIFS mount, or Samba's libsmbclient in nbdkit. */
export type CifsClient = 'kernel' | 'userspace';

/**
 * Mount precheck for a Legacy image URL: the checks of src/contract/image-url.ts, the same the Redfish
 * layer applies (https:// and smb:// only, http:// where the policy allows it, no credentials or control
 * characters, an smb:// path that names a file inside its share).
 */
export function checkLegacyUrl(imageUrl: string, policy: ImageUrlPolicy = {}): URL {
  const checked = checkImageUrl(imageUrl, policy);
  if (!checked.ok) throw PrecheckError.invalid(checked.message);
  return checked.url;
}

/**
 * `auto`: the kernel's CIFS where the kernel has it (`/proc/filesystems` lists cifs) and this process may
 * mount (root), the userspace client everywhere else (dev machines, CI containers).
 */
export async function chooseCifsClient(
  requested: CifsClient | 'auto',
  procFilesystems = '/proc/filesystems',
): Promise<CifsClient> {
  if (requested !== 'auto') return requested;
  const filesystems = await fs.readFile(procFilesystems, 'utf8').catch(() => '');
  const kernelCifs = /^\S*\s+(cifs|smb3)$/m.test(filesystems);
  return kernelCifs && process.getuid?.() === 0 ? 'kernel' : 'userspace';
}

export interface LegacySourceOptions {
  config: SlotConfig;
  url: URL;
  readOnly: boolean;
  credentials: Credentials | undefined;
  /** PEM bundle for https:// (system CAs plus VMEDIA_CA_BUNDLE). */
  caBundle: string | undefined;
  /** The slot's own trust for https:// (VerifyCertificate, added CAs). */
  trust: SlotTrust;
  /** Where the slot's combined CA bundle is written for the mount. */
  runtimeDir: string;
  cifsClient: CifsClient;
  nbdkit: string;
}

/** Starts the source the URL's scheme calls for (docs/contract.md §2 "Legacy sources"). */
export function startLegacySource(
  options: LegacySourceOptions,
  context: MountContext,
): Promise<MediumSource> {
  const { url } = options;
  if (url.protocol === 'https:' || url.protocol === 'http:') return startHttpsSource(options, context);
  if (options.cifsClient === 'kernel') {
    return startKernelCifsSource({ ...options, location: smbLocation(url) }, context);
  }
  return startUserspaceCifsSource(options, context);
}
