import fs from 'node:fs/promises';
import path from 'node:path';
import { Errno } from '../../contract/dbus.ts';
import { writeSlotCaBundle } from '../ca-bundle.ts';
import type { SlotConfig } from '../config.ts';
import type { Credentials } from '../credentials.ts';
import { MountFailure } from '../errors.ts';
import type { MountContext } from '../slot.ts';
import type { SlotTrust } from '../trust.ts';
import { lastLine, startNbdkit } from './nbdkit.ts';
import type { MediumSource } from './source.ts';

export interface HttpsSourceOptions {
  config: SlotConfig;
  url: URL;
  readOnly: boolean;
  credentials: Credentials | undefined;
  /** PEM bundle replacing curl's default trust store (system CAs plus VMEDIA_CA_BUNDLE). */
  caBundle: string | undefined;
  /** The slot's own trust: verification off, or CAs added to that bundle. */
  trust: SlotTrust;
  runtimeDir: string;
  nbdkit: string;
}

/**
 * Legacy https:// source (and http://, where the integrator allows it): `nbdkit curl` serving the image
 * on the slot's socket, certificate verification on, TLS ≥ 1.2, only the URL's own scheme and no
 * redirects, so an https:// image is never fetched over http.
 */
export async function startHttpsSource(
  options: HttpsSourceOptions,
  context: MountContext,
): Promise<MediumSource> {
  const plugin = [
    'curl',
    `url=${options.url.href}`,
    `protocols=${options.url.protocol === 'http:' ? 'http' : 'https'}`,
    'followlocation=false',
    'ssl-version=tlsv1.2',
  ];
  const { verifyCertificate, certificates } = options.trust;
  if (!verifyCertificate) {
    // The administrator turned verification off for this slot (VerifyCertificate false).
    context.log.warn('the image server certificate is not verified (VerifyCertificate is false)');
    plugin.push('sslverify=false');
  } else if (certificates.length > 0) {
    const bundle = path.join(options.runtimeDir, `${options.config.slotId}.ca-bundle.pem`);
    context.cleanup.defer('remove the slot CA bundle', () => fs.rm(bundle, { force: true }));
    await writeSlotCaBundle(options.caBundle, certificates, bundle);
    plugin.push(`cainfo=${bundle}`);
  } else if (options.caBundle) {
    plugin.push(`cainfo=${options.caBundle}`);
  }
  return startNbdkit({ ...options, plugin, explain: explainCurlFailure }, context);
}

/** Maps nbdkit-curl's (libcurl's) error text to the errno reported in Completion. */
function explainCurlFailure(stderr: string, cause?: unknown): MountFailure {
  const reason = lastLine(stderr) || 'nbdkit refused the connection';
  const errno = (() => {
    if (/returned error: 40[13]\b/.test(stderr)) return Errno.EACCES;
    if (/returned error: 404\b|returned error: 410\b/.test(stderr)) return Errno.ENOENT;
    if (/SSL|certificate|TLS/i.test(stderr)) return Errno.EPERM;
    if (/Couldn't connect|Connection refused/i.test(stderr)) return Errno.ECONNREFUSED;
    if (/Couldn't resolve|No route to host|Network is unreachable/i.test(stderr)) return Errno.EHOSTUNREACH;
    return Errno.EIO;
  })();
  return new MountFailure(errno, reason, { cause });
}
