/**
 * NBD wire constants, named as in the protocol document (NetworkBlockDevice/nbd doc/proto.md).
 * Only what this implementation sends, parses or names in an error message; the messages built from
 * them are in protocol.ts.
 */

/** 'NBDMAGIC', sent first by every server. */
export const NBDMAGIC = 0x4e42444d41474943n;
/** 'IHAVEOPT': the newstyle magic, and the prefix of every option request. */
export const IHAVEOPT = 0x49484156454f5054n;
/** The oldstyle handshake's second magic (`cliserv_magic`), recognised only to refuse it clearly. */
export const CLISERV_MAGIC = 0x00420281861253n;
/** Prefix of every fixed-newstyle option reply. */
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;

export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// Handshake flags (server, 16 bits) and client flags (32 bits).
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

// Transmission flags (16 bits).
export const FLAG_HAS_FLAGS = 1 << 0;
export const FLAG_READ_ONLY = 1 << 1;
export const FLAG_SEND_FLUSH = 1 << 2;
export const FLAG_SEND_FUA = 1 << 3;
export const FLAG_SEND_TRIM = 1 << 5;
/** Never set: named so that tests can say so. */
export const FLAG_CAN_MULTI_CONN = 1 << 8;

// Options.
export const OPT_EXPORT_NAME = 1;
export const OPT_ABORT = 2;
export const OPT_LIST = 3;
export const OPT_STARTTLS = 5;
export const OPT_INFO = 6;
export const OPT_GO = 7;
export const OPT_STRUCTURED_REPLY = 8;
export const OPT_LIST_META_CONTEXT = 9;
export const OPT_SET_META_CONTEXT = 10;
export const OPT_EXTENDED_HEADERS = 11;

// Option reply types; errors have bit 31 set.
export const REP_ACK = 1;
export const REP_SERVER = 2;
export const REP_INFO = 3;
export const REP_FLAG_ERROR = 0x80000000;
export const REP_ERR_UNSUP = REP_FLAG_ERROR + 1;
export const REP_ERR_POLICY = REP_FLAG_ERROR + 2;
export const REP_ERR_INVALID = REP_FLAG_ERROR + 3;
export const REP_ERR_PLATFORM = REP_FLAG_ERROR + 4;
export const REP_ERR_TLS_REQD = REP_FLAG_ERROR + 5;
export const REP_ERR_UNKNOWN = REP_FLAG_ERROR + 6;
export const REP_ERR_SHUTDOWN = REP_FLAG_ERROR + 7;
export const REP_ERR_BLOCK_SIZE_REQD = REP_FLAG_ERROR + 8;
export const REP_ERR_TOO_BIG = REP_FLAG_ERROR + 9;

// Information types carried by NBD_REP_INFO.
export const INFO_EXPORT = 0;
export const INFO_NAME = 1;
export const INFO_BLOCK_SIZE = 3;

// Commands and command flags.
export const CMD_READ = 0;
export const CMD_WRITE = 1;
export const CMD_DISC = 2;
export const CMD_FLUSH = 3;
export const CMD_TRIM = 4;
export const CMD_FLAG_FUA = 1 << 0;

// Error values of the reply's error field.
export const EPERM = 1;
export const EIO = 5;
export const ENOMEM = 12;
export const EINVAL = 22;
export const ENOSPC = 28;
export const EOVERFLOW = 75;
export const ENOTSUP = 95;
export const ESHUTDOWN = 108;

/** 2^25: the payload every peer must accept, and our default maximum (proto.md "Size constraints"). */
export const DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024;
/** Strings (export names, messages) MUST be no longer than 4096 bytes. */
export const MAX_STRING_LENGTH = 4096;

const optionNames: Record<number, string> = {
  [OPT_EXPORT_NAME]: 'NBD_OPT_EXPORT_NAME',
  [OPT_ABORT]: 'NBD_OPT_ABORT',
  [OPT_LIST]: 'NBD_OPT_LIST',
  [OPT_STARTTLS]: 'NBD_OPT_STARTTLS',
  [OPT_INFO]: 'NBD_OPT_INFO',
  [OPT_GO]: 'NBD_OPT_GO',
  [OPT_STRUCTURED_REPLY]: 'NBD_OPT_STRUCTURED_REPLY',
  [OPT_LIST_META_CONTEXT]: 'NBD_OPT_LIST_META_CONTEXT',
  [OPT_SET_META_CONTEXT]: 'NBD_OPT_SET_META_CONTEXT',
  [OPT_EXTENDED_HEADERS]: 'NBD_OPT_EXTENDED_HEADERS',
};

const replyNames: Record<number, string> = {
  [REP_ACK]: 'NBD_REP_ACK',
  [REP_SERVER]: 'NBD_REP_SERVER',
  [REP_INFO]: 'NBD_REP_INFO',
  [REP_ERR_UNSUP]: 'NBD_REP_ERR_UNSUP',
  [REP_ERR_POLICY]: 'NBD_REP_ERR_POLICY',
  [REP_ERR_INVALID]: 'NBD_REP_ERR_INVALID',
  [REP_ERR_PLATFORM]: 'NBD_REP_ERR_PLATFORM',
  [REP_ERR_TLS_REQD]: 'NBD_REP_ERR_TLS_REQD',
  [REP_ERR_UNKNOWN]: 'NBD_REP_ERR_UNKNOWN',
  [REP_ERR_SHUTDOWN]: 'NBD_REP_ERR_SHUTDOWN',
  [REP_ERR_BLOCK_SIZE_REQD]: 'NBD_REP_ERR_BLOCK_SIZE_REQD',
  [REP_ERR_TOO_BIG]: 'NBD_REP_ERR_TOO_BIG',
};

const errorNames: Record<number, string> = {
  [EPERM]: 'EPERM',
  [EIO]: 'EIO',
  [ENOMEM]: 'ENOMEM',
  [EINVAL]: 'EINVAL',
  [ENOSPC]: 'ENOSPC',
  [EOVERFLOW]: 'EOVERFLOW',
  [ENOTSUP]: 'ENOTSUP',
  [ESHUTDOWN]: 'ESHUTDOWN',
};

const commandNames: Record<number, string> = {
  [CMD_READ]: 'read',
  [CMD_WRITE]: 'write',
  [CMD_DISC]: 'disconnect',
  [CMD_FLUSH]: 'flush',
  [CMD_TRIM]: 'trim',
};

export function optionName(option: number): string {
  return optionNames[option] ?? `option ${option}`;
}

export function replyName(reply: number): string {
  return replyNames[reply] ?? `reply type 0x${reply.toString(16)}`;
}

/** `EINVAL`, `EIO`, … for an NBD error value; unknown values are shown as numbers. */
export function errorName(errno: number): string {
  return errorNames[errno] ?? `error ${errno}`;
}

export function commandName(type: number): string {
  return commandNames[type] ?? `command ${type}`;
}
