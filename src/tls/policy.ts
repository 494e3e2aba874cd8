import type { SecureContextOptions, TlsOptions } from 'node:tls';

/**
 * The server's TLS policy: TLS 1.2 and 1.3 only, and for TLS 1.2 only forward-secret AEAD suites (Mozilla's
 * "intermediate" list without the finite-field DHE ones, which would need parameters of our own). CBC
 * suites, which Node's default list still allows through `HIGH`, are out. TLS 1.3 suites are all AEAD and
 * keep Node's defaults.
 */
const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
];

export const tlsPolicy: Pick<TlsOptions, 'minVersion' | 'honorCipherOrder'> &
  Pick<SecureContextOptions, 'ciphers'> = {
  minVersion: 'TLSv1.2',
  ciphers: TLS12_CIPHERS.join(':'),
  honorCipherOrder: true,
};
