/**
 * The Legacy image URL contract (docs/contract.md §2 "Legacy sources"): which schemes the service can
 * fetch an image from, the Redfish TransferProtocolType each implies, and the checks every side applies
 * to a URL before it goes anywhere — the Redfish layer (InsertMedia, PATCH), the web UI and the service's
 * Mount precheck. Node-free (only the WHATWG URL global), so the browser bundle can import it.
 */

/** What refuses smb:// everywhere until CIFS is implemented. */
export const CIFS_NOT_SUPPORTED = 'CIFS (smb://) images are not supported yet';

/** The one list of schemes a Legacy image may use, with the TransferProtocolType each implies. */
export const TRANSFER_PROTOCOL_BY_SCHEME: Readonly<Record<string, string>> = Object.freeze({
  'https:': 'HTTPS',
});

export const SUPPORTED_IMAGE_SCHEMES: readonly string[] = Object.freeze(
  Object.keys(TRANSFER_PROTOCOL_BY_SCHEME),
);

/** Refusals of schemes someone may reasonably try, clearer than the generic one. */
const schemeRefusals: Readonly<Record<string, string>> = { 'smb:': CIFS_NOT_SUPPORTED };

/**
 * Why a URL is refused. `unsupported-scheme` is a well-formed URL the service cannot fetch; the others are
 * URLs no side may pass on.
 */
export type ImageUrlProblem =
  | 'not-a-url'
  | 'unsupported-scheme'
  | 'forbidden-character'
  | 'no-host'
  | 'userinfo';

export type ImageUrlCheck =
  | { ok: true; url: URL; transferProtocol: string }
  | { ok: false; problem: ImageUrlProblem; message: string };

/**
 * Spaces and control characters (CR, LF, NUL, tab, …) are refused outright: the URL parser would
 * silently drop or percent-encode them, so what is fetched would differ from what was asked for, and
 * they have no business in a helper's argument or in a log line.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what it finds.
const FORBIDDEN_CHARACTERS = /[\u0000-\u0020\u007f]/;

/**
 * Checks an image URL, in this order: it parses, its scheme is supported, it holds no space or control
 * character, it names a host, and it carries no user:password (credentials travel separately, through
 * the Mount fd, never in a URL that ends up in argv, `Image` or the logs).
 */
export function checkImageUrl(image: string): ImageUrlCheck {
  let url: URL;
  try {
    url = new URL(image);
  } catch {
    return { ok: false, problem: 'not-a-url', message: 'the image URL is not a valid URL' };
  }
  const transferProtocol = TRANSFER_PROTOCOL_BY_SCHEME[url.protocol];
  if (!transferProtocol) {
    const message =
      schemeRefusals[url.protocol] ??
      `${url.protocol}// images are refused: only ${SUPPORTED_IMAGE_SCHEMES.map((s) => `${s}//`).join(', ')} is supported`;
    return { ok: false, problem: 'unsupported-scheme', message };
  }
  if (FORBIDDEN_CHARACTERS.test(image)) {
    return {
      ok: false,
      problem: 'forbidden-character',
      message: 'the image URL must not contain spaces or control characters (CR, LF, NUL)',
    };
  }
  if (!url.hostname) return { ok: false, problem: 'no-host', message: 'the image URL has no host' };
  if (url.username || url.password) {
    return {
      ok: false,
      problem: 'userinfo',
      message: 'credentials must not be part of the image URL: they are passed separately',
    };
  }
  return { ok: true, url, transferProtocol };
}

/** The TransferProtocolType an image URL implies; null for a URL of no supported scheme. */
export function transferProtocolOf(image: string): string | null {
  try {
    return TRANSFER_PROTOCOL_BY_SCHEME[new URL(image).protocol] ?? null;
  } catch {
    return null;
  }
}
