/**
 * The Legacy image URL contract (docs/contract.md §2 "Legacy sources"): which schemes the service can
 * fetch an image from, the Redfish TransferProtocolType each implies, and the checks every side applies
 * to a URL before it goes anywhere — the Redfish layer (InsertMedia, PATCH), the web UI and the service's
 * Mount precheck. Node-free (only the WHATWG URL global), so the browser bundle can import it.
 */

/**
 * What an integrator may allow beyond the defaults. Plain `http://` is refused unless allowed
 * (VMEDIA_ALLOW_HTTP): the design supports no unencrypted image transfer, but Ironic and Metal3 serve
 * their images over http by default.
 */
export interface ImageUrlPolicy {
  allowHttp?: boolean;
}

/** The one list of schemes a Legacy image may use, with the TransferProtocolType each implies. */
const SECURE_PROTOCOLS: Readonly<Record<string, string>> = Object.freeze({
  'https:': 'HTTPS',
  'smb:': 'CIFS',
});
const WITH_HTTP: Readonly<Record<string, string>> = Object.freeze({ ...SECURE_PROTOCOLS, 'http:': 'HTTP' });

/** Scheme → TransferProtocolType for every scheme the policy allows, the default (https:) first. */
export function transferProtocolsByScheme(policy: ImageUrlPolicy = {}): Readonly<Record<string, string>> {
  return policy.allowHttp ? WITH_HTTP : SECURE_PROTOCOLS;
}

/**
 * Why a URL is refused. `unsupported-scheme` is a well-formed URL the service cannot fetch; the others are
 * URLs no side may pass on.
 */
export type ImageUrlProblem =
  | 'not-a-url'
  | 'unsupported-scheme'
  | 'forbidden-character'
  | 'no-host'
  | 'userinfo'
  | 'smb-path';

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
export function checkImageUrl(image: string, policy: ImageUrlPolicy = {}): ImageUrlCheck {
  let url: URL;
  try {
    url = new URL(image);
  } catch {
    return { ok: false, problem: 'not-a-url', message: 'the image URL is not a valid URL' };
  }
  const allowed = transferProtocolsByScheme(policy);
  const transferProtocol = allowed[url.protocol];
  if (!transferProtocol) {
    const schemes = Object.keys(allowed).map((s) => `${s}//`);
    const listed = `${schemes.slice(0, -1).join(', ')} and ${schemes.at(-1)}`;
    const message = `images from ${url.protocol}// URLs are refused: only ${listed} are supported`;
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
  if (url.protocol === 'smb:') {
    const problem = smbPathProblem(image, url);
    if (problem) return { ok: false, problem: 'smb-path', message: problem };
  }
  return { ok: true, url, transferProtocol };
}

/** Where an smb:// image lives: the share, and the file's path inside it (decoded, without a leading `/`). */
export interface SmbLocation {
  /** Host name or IP address as the URL spells it (an IPv6 address in brackets). */
  host: string;
  /** The port, when the URL gives one (SMB's default is 445). */
  port: number | undefined;
  share: string;
  path: string;
}

/** Splits a URL that passed checkImageUrl into share and path. */
export function smbLocation(url: URL): SmbLocation {
  const [share, ...rest] = url.pathname.slice(1).split('/').map(decodeURIComponent);
  return {
    host: url.hostname,
    port: url.port ? Number(url.port) : undefined,
    share: share!,
    path: rest.join('/'),
  };
}

/**
 * What makes an smb:// URL unusable: it must name a share and a file in it. The parser resolves `.` and
 * `..` silently (`smb://h/share/../x` would become share `x`), so they are looked for in the raw text;
 * an encoded `/`, backslash or control character would let a segment say something else once decoded; `?` and `#` have no
 * meaning in SMB and libsmbclient would read options from a query.
 */
function smbPathProblem(image: string, url: URL): string | undefined {
  const rawPath = image.replace(/^smb:\/\/[^/?#]*/i, '').replace(/[?#].*$/s, '');
  const rawSegments = rawPath.split('/').slice(1);
  if (rawSegments.some((segment) => /^(\.|%2e){1,2}$/i.test(segment))) {
    return 'the image URL must not contain . or .. path segments';
  }
  if (url.search || url.hash || /[?#]/.test(image)) {
    return 'an smb:// image URL must not have a query or a fragment';
  }
  let segments: string[];
  try {
    segments = url.pathname.slice(1).split('/').map(decodeURIComponent);
  } catch {
    return 'the image URL has a malformed percent-encoding';
  }
  if (segments.length < 2 || segments.some((segment) => segment === '')) {
    return 'an smb:// image URL names a share and a file in it: smb://host/share/path/file.iso';
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: decoded control characters are what it finds.
  if (segments.some((segment) => /[/\\\u0000-\u001f\u007f]/.test(segment))) {
    return 'the image URL must not encode /, \\ or a control character in a path segment';
  }
  return undefined;
}

/** The TransferProtocolType an image URL implies; null for a URL of no scheme any policy allows. */
export function transferProtocolOf(image: string): string | null {
  try {
    return WITH_HTTP[new URL(image).protocol] ?? null;
  } catch {
    return null;
  }
}
