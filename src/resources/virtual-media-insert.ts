import { isValidCredential } from '../contract/credentials.ts';
import { Errno } from '../contract/dbus.ts';
import {
  checkImageUrl,
  type ImageUrlPolicy,
  transferProtocolOf,
  transferProtocolsByScheme,
} from '../contract/image-url.ts';
import type { LegacyCredentials } from '../dbus/virtual-media-client.ts';
import { errors } from '../redfish/errors.ts';
import { type RedfishMessage, redfishMessage } from '../redfish/messages.ts';
import type { TaskOutcome } from './tasks.ts';

export const INSERT_ACTION = 'VirtualMedia.InsertMedia';
export const EJECT_ACTION = 'VirtualMedia.EjectMedia';

/** What InsertMedia and a PATCH with `Image` both carry, after the JSON schema checked the types. */
export interface InsertParameters {
  Image?: string | null;
  Inserted?: boolean;
  WriteProtected?: boolean;
  UserName?: string;
  Password?: string | null;
  TransferMethod?: string;
  TransferProtocolType?: string | null;
  /** PATCH only: whether the https:// image server's certificate is verified. */
  VerifyCertificate?: boolean;
}

export interface InsertRequest {
  url: string;
  readWrite: boolean;
  credentials: LegacyCredentials | undefined;
}

/**
 * The same rule reported in an action's words (ActionParameter*) or a PATCH's (Property*), so both
 * ways of inserting share one set of checks.
 */
export interface ParameterProblems {
  missing(name: string): RedfishMessage;
  notSupported(name: string, value: string): RedfishMessage;
  format(name: string, value: string): RedfishMessage;
  conflict(name: string, value: string, other: string): RedfishMessage;
  /** For values that must not be echoed (credentials). */
  invalid(name: string): RedfishMessage;
}

const pointer = (name: string) => [`#/${name}`];

export const actionProblems: ParameterProblems = {
  missing: (name) => redfishMessage('ActionParameterMissing', [INSERT_ACTION, name], pointer(name)),
  notSupported: (name) => redfishMessage('ActionParameterNotSupported', [name, INSERT_ACTION], pointer(name)),
  format: (name, value) =>
    redfishMessage('ActionParameterValueFormatError', [value, name, INSERT_ACTION], pointer(name)),
  conflict: (name, value) => redfishMessage('ActionParameterValueConflict', [name, value], pointer(name)),
  invalid: (name) => redfishMessage('ActionParameterValueError', [name, INSERT_ACTION], pointer(name)),
};

export const propertyProblems: ParameterProblems = {
  missing: (name) => redfishMessage('PropertyMissing', [name], pointer(name)),
  notSupported: (name, value) => redfishMessage('PropertyValueNotInList', [value, name], pointer(name)),
  format: (name, value) => redfishMessage('PropertyValueFormatError', [value, name], pointer(name)),
  conflict: (name, _value, other) => redfishMessage('PropertyValueConflict', [name, other], pointer(name)),
  invalid: (name) => redfishMessage('PropertyValueError', [name], pointer(name)),
};

/** An image URL as it may be shown back: never with the user:password part someone put in it. */
export function displayUrl(image: string): string {
  return image.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, '$1');
}

/** The Redfish TransferProtocolType an image URL implies; null for none we support. */
export const protocolOf = transferProtocolOf;

/** Every TransferProtocolType a Legacy slot takes, the default (what an https:// image uses) first. */
export function transferProtocolTypes(policy: ImageUrlPolicy): readonly string[] {
  return Object.values(transferProtocolsByScheme(policy));
}

/** Applies docs/contract.md §3's InsertMedia rules beyond the JSON types; throws the first failure as a 400. */
export function checkInsert(
  parameters: InsertParameters,
  problems: ParameterProblems,
  policy: ImageUrlPolicy,
): InsertRequest {
  const fail = (message: RedfishMessage) => errors.badRequest([message]);
  const { Image: image } = parameters;
  if (typeof image !== 'string') throw fail(problems.missing('Image'));
  if (parameters.Inserted === false) throw fail(problems.notSupported('Inserted', 'false'));
  if (parameters.TransferMethod !== undefined && parameters.TransferMethod !== 'Stream') {
    throw fail(problems.notSupported('TransferMethod', parameters.TransferMethod));
  }

  // The checks the service applies too (src/contract/image-url.ts), their reason given as the message's
  // resolution. A scheme it cannot fetch (http://, ftp://…) is an unknown format; not a URL, a space or
  // control character, no host, secrets in it (which would end up in `Image`) or an smb:// path that
  // names no file or escapes its share is a format error.
  const checked = checkImageUrl(image, policy);
  if (!checked.ok) {
    const refusal =
      checked.problem === 'unsupported-scheme'
        ? redfishMessage('ResourceAtUriInUnknownFormat', [displayUrl(image)], pointer('Image'))
        : problems.format('Image', displayUrl(image));
    throw fail({
      ...refusal,
      Resolution: `${checked.message[0]!.toUpperCase()}${checked.message.slice(1)}.`,
    });
  }
  const protocol = checked.transferProtocol;
  const requested = parameters.TransferProtocolType;
  if (requested !== undefined && requested !== null && requested !== protocol) {
    throw fail(problems.conflict('TransferProtocolType', requested, 'Image'));
  }

  const { UserName: user, Password: password } = parameters;
  for (const [name, value] of [
    ['UserName', user],
    ['Password', password],
  ] as const) {
    if (value === undefined || value === null) continue;
    // Credentials cross to the service in a fixed-size buffer each, NUL-separated (src/contract/credentials.ts).
    if (!isValidCredential(value)) throw fail(problems.invalid(name));
  }

  return {
    url: image,
    readWrite: parameters.WriteProtected === false,
    credentials:
      user !== undefined || typeof password === 'string'
        ? { user: user ?? '', password: password ?? '' }
        : undefined,
  };
}

/**
 * What a Completion errno means to the person who asked for the image: which message, and the status
 * the task monitor reports. The service reports source failures with these errnos (docs/contract.md §2).
 */
export function insertOutcome(errno: number, image: string): TaskOutcome {
  const shown = displayUrl(image);
  const outcome = (statusCode: number, message: RedfishMessage): TaskOutcome => ({
    statusCode,
    messages: [message],
  });
  switch (errno) {
    case Errno.OK:
      return outcome(204, redfishMessage('Success', []));
    case Errno.ECONNREFUSED:
    case Errno.EHOSTUNREACH:
      return outcome(400, redfishMessage('CouldNotEstablishConnection', [shown]));
    case Errno.ENOENT:
      return outcome(404, redfishMessage('ResourceNotFound', ['Image', shown]));
    case Errno.EACCES:
      return outcome(
        400,
        redfishMessage('ResourceAtUriUnauthorized', [shown, 'access denied: check UserName and Password']),
      );
    case Errno.EPERM:
      return outcome(
        400,
        redfishMessage('ResourceAtUriUnauthorized', [
          shown,
          'the server certificate is not trusted: add its CA to the service (VMEDIA_CA_BUNDLE)',
        ]),
      );
    case Errno.EPROTONOSUPPORT:
      // The design promises an encrypted CIFS connection: an SMB server that cannot encrypt is refused.
      return outcome(400, {
        ...redfishMessage('CouldNotEstablishConnection', [shown]),
        Resolution:
          'The SMB server does not offer SMB3 encryption, which the BMC requires. Enable encryption on the server (Samba: server smb encrypt = desired) and resubmit the request.',
      });
    case Errno.EINVAL:
    case Errno.ENOTSUP:
      return outcome(400, redfishMessage('ResourceAtUriInUnknownFormat', [shown]));
    case Errno.EBUSY:
      return outcome(504, redfishMessage('OperationTimeout', []));
    case Errno.ENODEV:
      // Every USB device controller carries another slot's medium (or the BMC has none).
      return outcome(503, {
        ...redfishMessage('OperationFailed', []),
        Resolution:
          'No USB device controller is free to present the medium to the host. Eject the media of another VirtualMedia slot and resubmit the request.',
      });
    case Errno.ECANCELED:
      return outcome(409, redfishMessage('ResourceInUse', []));
    default:
      return outcome(502, redfishMessage('CouldNotEstablishConnection', [shown]));
  }
}
