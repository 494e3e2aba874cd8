import { Errno } from '../../contract/dbus.ts';
import type { SlotConfig } from '../config.ts';
import type { Credentials } from '../credentials.ts';
import { MountFailure } from '../errors.ts';
import type { MountContext } from '../slot.ts';
import { lastLine, startNbdkit } from './nbdkit.ts';
import type { MediumSource } from './source.ts';

export interface HttpsSourceOptions {
  config: SlotConfig;
  url: URL;
  readOnly: boolean;
  credentials: Credentials | undefined;
  /** PEM bundle replacing curl's default trust store (system CAs plus VMEDIA_CA_BUNDLE). */
  caBundle: string | undefined;
  nbdkit: string;
}

/**
 * Legacy https:// source (and http://, where the integrator allows it): `nbdkit curl` serving the image
 * on the slot's socket, certificate verification on, TLS ≥ 1.2, only the URL's own scheme and no
 * redirects, so an https:// image is never fetched over http.
 */
export function startHttpsSource(options: HttpsSourceOptions, context: MountContext): Promise<MediumSource> {
  const plugin = [
    'curl',
    `url=${options.url.href}`,
    `protocols=${options.url.protocol === 'http:' ? 'http' : 'https'}`,
    'followlocation=false',
    'ssl-version=tlsv1.2',
  ];
  if (options.caBundle) plugin.push(`cainfo=${options.caBundle}`);
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
