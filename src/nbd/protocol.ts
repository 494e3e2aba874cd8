/**
 * The NBD wire structures (proto.md), each declared once with its encoder and its decoder, as nbdkit's
 * server/protocol.h declares them for its server and libnbd: the client encodes what the server decodes
 * and the other way round, so the two cannot disagree about a field's offset. Every field is big-endian.
 *
 * Decoders throw NbdProtocolError for a message that breaks its own structure (a wrong length, an
 * impossible field) and NbdError for a size beyond 2^53 - 1. Whether a magic number or an option is what
 * the receiver expected at that point is for the receiver to judge: only it can say why.
 *
 * The transmission-phase decoders fill an object the caller owns instead of returning a new one: they
 * run once per request and per reply, on the read path.
 */
import type { BlockSizeConstraints } from './block-device.ts';
import {
  IHAVEOPT,
  INFO_BLOCK_SIZE,
  INFO_EXPORT,
  INFO_NAME,
  NBDMAGIC,
  OPTION_REPLY_MAGIC,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
} from './constants.ts';
import { NbdError, NbdProtocolError } from './errors.ts';
import { decodeUtf8, encodeUtf8, setU64, u64ToSafeNumber, viewOf } from './wire.ts';

const EMPTY = new Uint8Array(0);

// ---- Handshake -----------------------------------------------------------------------------------

/** S: the newstyle greeting: NBDMAGIC (64 bits), IHAVEOPT (64), handshake flags (16). */
export const GREETING_SIZE = 18;
/** NBDMAGIC, the first field of every server's greeting, oldstyle or newstyle. */
export const GREETING_MAGIC_SIZE = 8;

export interface Greeting {
  /** IHAVEOPT for newstyle; CLISERV_MAGIC from an oldstyle server. */
  version: bigint;
  /** NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_NO_ZEROES. */
  flags: number;
}

export function encodeGreeting(flags: number): Uint8Array {
  const bytes = new Uint8Array(GREETING_SIZE);
  const view = viewOf(bytes);
  view.setBigUint64(0, NBDMAGIC);
  view.setBigUint64(8, IHAVEOPT);
  view.setUint16(16, flags);
  return bytes;
}

/** Whether `bytes` (at least GREETING_MAGIC_SIZE of them) begin with NBDMAGIC. */
export function isGreetingMagic(bytes: Uint8Array): boolean {
  return viewOf(bytes).getBigUint64(0) === NBDMAGIC;
}

/** The fields after NBDMAGIC in a GREETING_SIZE-byte greeting. */
export function decodeGreeting(bytes: Uint8Array): Greeting {
  const view = viewOf(bytes);
  return { version: view.getBigUint64(8), flags: view.getUint16(16) };
}

/** C: the client's flags (32 bits): NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES. */
export const CLIENT_FLAGS_SIZE = 4;

export function encodeClientFlags(flags: number): Uint8Array {
  const bytes = new Uint8Array(CLIENT_FLAGS_SIZE);
  viewOf(bytes).setUint32(0, flags);
  return bytes;
}

export function decodeClientFlags(bytes: Uint8Array): number {
  return viewOf(bytes).getUint32(0);
}

/** C: an option request: IHAVEOPT (64 bits), the option (32), the length of its data (32), the data. */
export const OPTION_HEADER_SIZE = 16;

export interface OptionHeader {
  magic: bigint;
  option: number;
  length: number;
}

/** The whole request, header and data, as one message. */
export function encodeOption(option: number, data: Uint8Array = EMPTY): Uint8Array {
  const message = new Uint8Array(OPTION_HEADER_SIZE + data.length);
  const view = viewOf(message);
  view.setBigUint64(0, IHAVEOPT);
  view.setUint32(8, option);
  view.setUint32(12, data.length);
  message.set(data, OPTION_HEADER_SIZE);
  return message;
}

export function decodeOptionHeader(bytes: Uint8Array): OptionHeader {
  const view = viewOf(bytes);
  return { magic: view.getBigUint64(0), option: view.getUint32(8), length: view.getUint32(12) };
}

/**
 * S: an option reply: OPTION_REPLY_MAGIC (64 bits), the option answered (32), the reply type (32), the
 * length of its data (32), the data. An error reply's data is a message for humans.
 */
export const OPTION_REPLY_HEADER_SIZE = 20;

export interface OptionReplyHeader {
  magic: bigint;
  option: number;
  type: number;
  length: number;
}

/** The whole reply, header and data (or an error's message), as one message. */
export function encodeOptionReply(
  option: number,
  type: number,
  data: Uint8Array | string = EMPTY,
): Uint8Array {
  const body = typeof data === 'string' ? encodeUtf8(data) : data;
  const message = new Uint8Array(OPTION_REPLY_HEADER_SIZE + body.length);
  const view = viewOf(message);
  view.setBigUint64(0, OPTION_REPLY_MAGIC);
  view.setUint32(8, option);
  view.setUint32(12, type);
  view.setUint32(16, body.length);
  message.set(body, OPTION_REPLY_HEADER_SIZE);
  return message;
}

export function decodeOptionReplyHeader(bytes: Uint8Array): OptionReplyHeader {
  const view = viewOf(bytes);
  return {
    magic: view.getBigUint64(0),
    option: view.getUint32(8),
    type: view.getUint32(12),
    length: view.getUint32(16),
  };
}

/**
 * C: the data of NBD_OPT_INFO and NBD_OPT_GO: the export name's length (32 bits) and the name, the
 * number of information requests (16), then the NBD_INFO_* types asked for (16 each).
 */
export interface InfoRequest {
  name: string;
  infos: number[];
}

export function encodeInfoRequest(name: string, infos: readonly number[]): Uint8Array {
  const encoded = encodeUtf8(name);
  const data = new Uint8Array(4 + encoded.length + 2 + 2 * infos.length);
  const view = viewOf(data);
  view.setUint32(0, encoded.length);
  data.set(encoded, 4);
  view.setUint16(4 + encoded.length, infos.length);
  infos.forEach((info, i) => {
    view.setUint16(6 + encoded.length + 2 * i, info);
  });
  return data;
}

export function decodeInfoRequest(data: Uint8Array): InfoRequest {
  const view = viewOf(data);
  const nameLength = data.length >= 6 ? view.getUint32(0) : -1;
  if (nameLength < 0 || nameLength > data.length - 6) throw new NbdProtocolError('malformed option data');
  const count = view.getUint16(4 + nameLength);
  if (data.length !== 6 + nameLength + 2 * count) {
    throw new NbdProtocolError('information request list has the wrong length');
  }
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(view.getUint16(6 + nameLength + 2 * i));
  return { name: decodeUtf8(data.subarray(4, 4 + nameLength)), infos };
}

/** S: the data of NBD_REP_SERVER (NBD_OPT_LIST): an export name's length (32 bits) and the name. */
export function encodeServerReply(name: string): Uint8Array {
  const encoded = encodeUtf8(name);
  const data = new Uint8Array(4 + encoded.length);
  viewOf(data).setUint32(0, encoded.length);
  data.set(encoded, 4);
  return data;
}

/** The export name; anything after it (a description, which proto.md allows) is ignored. */
export function decodeServerReply(data: Uint8Array): string {
  const length = data.length >= 4 ? viewOf(data).getUint32(0) : -1;
  if (length < 0 || length > data.length - 4) throw new NbdProtocolError('malformed NBD_REP_SERVER reply');
  return decodeUtf8(data.subarray(4, 4 + length));
}

/**
 * S: the data of NBD_REP_INFO: the information type (16 bits), then NBD_INFO_EXPORT: the export size
 * (64) and transmission flags (16); NBD_INFO_NAME: the name; NBD_INFO_BLOCK_SIZE: minimum, preferred and
 * maximum (32 each).
 */
export type Info =
  | { kind: 'export'; size: number; flags: number }
  | { kind: 'blockSize'; blockSize: BlockSizeConstraints };

export function encodeInfoExport(size: number, flags: number): Uint8Array {
  const data = new Uint8Array(12);
  const view = viewOf(data);
  view.setUint16(0, INFO_EXPORT);
  setU64(view, 2, size);
  view.setUint16(10, flags);
  return data;
}

export function encodeInfoName(name: string): Uint8Array {
  const encoded = encodeUtf8(name);
  const data = new Uint8Array(2 + encoded.length);
  viewOf(data).setUint16(0, INFO_NAME);
  data.set(encoded, 2);
  return data;
}

export function encodeInfoBlockSize({ minimum, preferred, maximum }: BlockSizeConstraints): Uint8Array {
  const data = new Uint8Array(14);
  const view = viewOf(data);
  view.setUint16(0, INFO_BLOCK_SIZE);
  view.setUint32(2, minimum);
  view.setUint32(6, preferred);
  view.setUint32(10, maximum);
  return data;
}

/**
 * NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE (whose constraints must be possible: a power-of-two minimum up
 * to 64 KiB, a maximum not below it); undefined for NBD_INFO_NAME, NBD_INFO_DESCRIPTION and anything
 * newer, which the client does not need.
 */
export function decodeInfo(data: Uint8Array): Info | undefined {
  if (data.length < 2) throw new NbdProtocolError('NBD_REP_INFO without an information type');
  const view = viewOf(data);
  const type = view.getUint16(0);
  if (type === INFO_EXPORT) {
    if (data.length !== 12) throw new NbdProtocolError(`NBD_INFO_EXPORT of ${data.length} bytes`);
    return { kind: 'export', size: exportSize(view, 2), flags: view.getUint16(10) };
  }
  if (type === INFO_BLOCK_SIZE) {
    if (data.length !== 14) throw new NbdProtocolError(`NBD_INFO_BLOCK_SIZE of ${data.length} bytes`);
    const minimum = view.getUint32(2);
    const preferred = view.getUint32(6);
    const maximum = view.getUint32(10);
    if (minimum < 1 || minimum & (minimum - 1) || minimum > 65536 || maximum < minimum) {
      throw new NbdProtocolError(`invalid block size constraints ${minimum}/${preferred}/${maximum}`);
    }
    return { kind: 'blockSize', blockSize: { minimum, preferred, maximum } };
  }
  return undefined;
}

/**
 * S: the reply to NBD_OPT_EXPORT_NAME: the export size (64 bits) and transmission flags (16), then 124
 * zero bytes unless the client set NBD_FLAG_C_NO_ZEROES.
 */
export const EXPORT_NAME_REPLY_SIZE = 10;
export const EXPORT_NAME_REPLY_PADDING = 124;

export function encodeExportNameReply(size: number, flags: number, noZeroes: boolean): Uint8Array {
  const reply = new Uint8Array(EXPORT_NAME_REPLY_SIZE + (noZeroes ? 0 : EXPORT_NAME_REPLY_PADDING));
  const view = viewOf(reply);
  setU64(view, 0, size);
  view.setUint16(8, flags);
  return reply;
}

/** The size and flags of an EXPORT_NAME_REPLY_SIZE-byte reply (without the padding). */
export function decodeExportNameReply(bytes: Uint8Array): { size: number; flags: number } {
  const view = viewOf(bytes);
  return { size: exportSize(view, 0), flags: view.getUint16(8) };
}

function exportSize(view: DataView, offset: number): number {
  const raw = view.getBigUint64(offset);
  const size = u64ToSafeNumber(raw);
  if (size === undefined) throw new NbdError(`export size ${raw} is beyond 2^53 - 1 bytes`);
  return size;
}

// ---- Transmission --------------------------------------------------------------------------------

/**
 * C: a request header: REQUEST_MAGIC (32 bits), command flags (16), type (16), handle (64), offset (64),
 * length (32); a write's data follows.
 */
export const REQUEST_HEADER_SIZE = 28;

export interface RequestHeader {
  magic: number;
  flags: number;
  type: number;
  /** The 64-bit handle as two halves (no BigInt): the server echoes both. */
  handleHigh: number;
  handleLow: number;
  /** -1 when beyond 2^53 - 1, which is outside any export. */
  offset: number;
  length: number;
}

/** An empty header for `decodeRequest` to fill. */
export function requestHeader(): RequestHeader {
  return { magic: 0, flags: 0, type: 0, handleHigh: 0, handleLow: 0, offset: 0, length: 0 };
}

/** A request with a 32-bit `handle` (the high half of the field is 0). */
export function encodeRequest(
  type: number,
  flags: number,
  handle: number,
  offset: number,
  length: number,
): Uint8Array {
  const header = new Uint8Array(REQUEST_HEADER_SIZE);
  const view = viewOf(header);
  view.setUint32(0, REQUEST_MAGIC);
  view.setUint16(4, flags);
  view.setUint16(6, type);
  view.setUint32(12, handle);
  setU64(view, 16, offset);
  view.setUint32(24, length);
  return header;
}

/** Decodes a REQUEST_HEADER_SIZE-byte header into `into`, and returns it. */
export function decodeRequest(bytes: Uint8Array, into: RequestHeader): RequestHeader {
  const view = viewOf(bytes);
  into.magic = view.getUint32(0);
  into.flags = view.getUint16(4);
  into.type = view.getUint16(6);
  into.handleHigh = view.getUint32(8);
  into.handleLow = view.getUint32(12);
  into.offset = u64ToSafeNumber(view.getBigUint64(16)) ?? -1;
  into.length = view.getUint32(24);
  return into;
}

/** S: a simple reply header: SIMPLE_REPLY_MAGIC (32 bits), error (32), handle (64); a read's data follows. */
export const SIMPLE_REPLY_HEADER_SIZE = 16;

export interface SimpleReplyHeader {
  magic: number;
  error: number;
  handleHigh: number;
  handleLow: number;
}

/** An empty header for `decodeSimpleReply` to fill. */
export function simpleReplyHeader(): SimpleReplyHeader {
  return { magic: 0, error: 0, handleHigh: 0, handleLow: 0 };
}

export function encodeSimpleReply(error: number, handleHigh: number, handleLow: number): Uint8Array {
  const header = new Uint8Array(SIMPLE_REPLY_HEADER_SIZE);
  const view = viewOf(header);
  view.setUint32(0, SIMPLE_REPLY_MAGIC);
  view.setUint32(4, error);
  view.setUint32(8, handleHigh);
  view.setUint32(12, handleLow);
  return header;
}

/** Decodes a SIMPLE_REPLY_HEADER_SIZE-byte header into `into`, and returns it. */
export function decodeSimpleReply(bytes: Uint8Array, into: SimpleReplyHeader): SimpleReplyHeader {
  const view = viewOf(bytes);
  into.magic = view.getUint32(0);
  into.error = view.getUint32(4);
  into.handleHigh = view.getUint32(8);
  into.handleLow = view.getUint32(12);
  return into;
}
