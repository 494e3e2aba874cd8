/**
 * The Legacy credentials contract (docs/contract.md §2): Legacy.Mount's fd carries `user\0password\0`,
 * each field at most MAX_CREDENTIAL_BYTES of UTF-8 and free of NUL. The Redfish layer validates with it,
 * the server's D-Bus client encodes with it and the service decodes with it. Node-free: plain Uint8Array,
 * no Buffer.
 */

/** Each field (user, password) must fit the service's buffer. */
export const MAX_CREDENTIAL_BYTES = 512;

/** The largest well-formed payload: both fields at their limit, each with its terminator. */
export const MAX_CREDENTIALS_PAYLOAD_BYTES = 2 * (MAX_CREDENTIAL_BYTES + 1);

export class CredentialsFormatError extends Error {
  override name = 'CredentialsFormatError';
}

/**
 * Bytes of `value` in UTF-8, counted without encoding it (no copy of a secret left behind). A lone
 * surrogate counts as the three bytes of the U+FFFD that replaces it.
 */
export function utf8ByteLength(value: string): number {
  let bytes = 0;
  for (const character of value) {
    const code = character.codePointAt(0)!;
    bytes += code < 0x80 ? 1 : code < 0x800 ? 2 : code < 0x10000 ? 3 : 4;
  }
  return bytes;
}

/** Whether `value` may be sent as a user name or a password: no NUL, at most MAX_CREDENTIAL_BYTES. */
export function isValidCredential(value: string): boolean {
  return !value.includes('\0') && utf8ByteLength(value) <= MAX_CREDENTIAL_BYTES;
}

/**
 * `user\0password\0`, written in place into one array (no intermediate copies): the caller wipes it
 * (`fill(0)`) after use. Throws CredentialsFormatError for a field isValidCredential refuses.
 */
export function encodeCredentials(user: string, password: string): Uint8Array {
  if (!isValidCredential(user) || !isValidCredential(password)) {
    throw new CredentialsFormatError(
      `user name and password are limited to ${MAX_CREDENTIAL_BYTES} bytes each, without NUL`,
    );
  }
  const userBytes = utf8ByteLength(user);
  // NUL-terminated by the array's initial zeroes.
  const payload = new Uint8Array(userBytes + utf8ByteLength(password) + 2);
  const encoder = new TextEncoder();
  encoder.encodeInto(user, payload);
  encoder.encodeInto(password, payload.subarray(userBytes + 1));
  return payload;
}

/** Decoded credentials: the password stays bytes, in an array of its own, so it can be wiped. */
export interface DecodedCredentials {
  user: string;
  password: Uint8Array;
}

/**
 * Parses `user\0password\0` (the trailing NUL is optional); copies the password into its own array, so
 * the caller can wipe `bytes` at once. Throws CredentialsFormatError for anything else.
 */
export function decodeCredentials(bytes: Uint8Array): DecodedCredentials {
  const userEnd = bytes.indexOf(0);
  if (userEnd < 0) throw new CredentialsFormatError('credentials must be user\\0password\\0');
  let passwordEnd = bytes.indexOf(0, userEnd + 1);
  if (passwordEnd < 0) passwordEnd = bytes.length;
  if (passwordEnd !== bytes.length && passwordEnd !== bytes.length - 1) {
    throw new CredentialsFormatError('credentials carry data after the password');
  }
  if (userEnd > MAX_CREDENTIAL_BYTES || passwordEnd - userEnd - 1 > MAX_CREDENTIAL_BYTES) {
    throw new CredentialsFormatError(
      `user name and password are limited to ${MAX_CREDENTIAL_BYTES} bytes each`,
    );
  }
  // ignoreBOM keeps a leading U+FEFF as part of the name, as it was sent.
  const user = new TextDecoder('utf-8', { ignoreBOM: true }).decode(bytes.subarray(0, userEnd));
  // A copy in an array of its own (Buffer's `slice` would be a view into `bytes`).
  const password = new Uint8Array(bytes.subarray(userEnd + 1, passwordEnd));
  return { user, password };
}
