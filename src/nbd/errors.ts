import { EINVAL, EIO, ENOMEM, ENOSPC, EPERM, errorName, replyName } from './constants.ts';

/** Base class of every error this module throws on purpose. */
export class NbdError extends Error {
  override name = 'NbdError';
}

/** The peer broke the protocol: bad magic, a truncated message, an impossible length, unknown flags. */
export class NbdProtocolError extends NbdError {
  override name = 'NbdProtocolError';
}

/** The connection ended (or was closed locally) while something still needed it. */
export class NbdDisconnectedError extends NbdError {
  override name = 'NbdDisconnectedError';
}

/**
 * A transmission request failed with an NBD error value (`EINVAL`, `EPERM`, `EIO`, …). A client rejects
 * with it when the server replies with an error; a `BlockDevice` may throw it to choose the error value
 * a server replies with (anything else becomes `EIO`, or the value matching a Node `code` such as ENOSPC).
 */
export class NbdRequestError extends NbdError {
  override name = 'NbdRequestError';
  /** The NBD error value, e.g. 22 for EINVAL. */
  readonly errno: number;
  /** Symbolic name of `errno`, e.g. `EINVAL`. */
  readonly code: string;

  constructor(errno: number, message?: string) {
    super(message ?? `NBD error ${errorName(errno)} (${errno})`);
    this.errno = errno;
    this.code = errorName(errno);
  }
}

/**
 * The NBD error value a server replies with when a backend call fails with `error`: an NbdRequestError's
 * own value, the match of a Node `code` (EACCES → EPERM, EDQUOT → ENOSPC, …), EIO for anything else.
 */
export function errnoOf(error: unknown): number {
  if (error instanceof NbdRequestError) return error.errno;
  const code = (error as { code?: unknown } | null)?.code;
  switch (code) {
    case 'EPERM':
    case 'EACCES':
    case 'EROFS':
      return EPERM;
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return ENOSPC;
    case 'EINVAL':
      return EINVAL;
    case 'ENOMEM':
      return ENOMEM;
    default:
      return EIO;
  }
}

/** The server answered an option (NBD_OPT_GO, NBD_OPT_LIST, …) with an error reply. */
export class NbdOptionError extends NbdError {
  override name = 'NbdOptionError';
  /** The NBD_REP_ERR_* reply type. */
  readonly reply: number;
  /** The server's own message, if it sent one. */
  readonly serverMessage: string;

  constructor(reply: number, message: string, serverMessage = '') {
    super(message);
    this.reply = reply;
    this.serverMessage = serverMessage;
  }

  get replyName(): string {
    return replyName(this.reply);
  }
}
