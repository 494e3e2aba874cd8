/**
 * The client's handshake (proto.md "Fixed newstyle negotiation"): the server's greeting, our flags, then
 * NBD_OPT_GO (asking for NBD_INFO_BLOCK_SIZE), falling back to NBD_OPT_EXPORT_NAME when the server
 * answers NBD_REP_ERR_UNSUP or only speaks plain newstyle; NO_ZEROES when offered; NBD_OPT_LIST and
 * NBD_OPT_ABORT. Oldstyle servers are refused by name.
 */
import type { BlockSizeConstraints } from '../block-device.ts';
import type { ByteReader } from '../byte-reader.ts';
import type { NbdConnection } from '../connection.ts';
import {
  CLISERV_MAGIC,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO_BLOCK_SIZE,
  OPT_ABORT,
  OPT_EXPORT_NAME,
  OPT_GO,
  OPT_LIST,
  OPTION_REPLY_MAGIC,
  optionName,
  REP_ACK,
  REP_ERR_UNSUP,
  REP_FLAG_ERROR,
  REP_INFO,
  REP_SERVER,
  replyName,
} from '../constants.ts';
import { NbdDisconnectedError, NbdError, NbdOptionError, NbdProtocolError } from '../errors.ts';
import {
  decodeExportNameReply,
  decodeGreeting,
  decodeInfo,
  decodeOptionReplyHeader,
  decodeServerReply,
  EXPORT_NAME_REPLY_PADDING,
  EXPORT_NAME_REPLY_SIZE,
  encodeClientFlags,
  encodeInfoRequest,
  encodeOption,
  GREETING_MAGIC_SIZE,
  GREETING_SIZE,
  isGreetingMagic,
  OPTION_REPLY_HEADER_SIZE,
} from '../protocol.ts';
import { decodeUtf8, describeBytes, encodeUtf8 } from '../wire.ts';

/** What the handshake learnt about the export it attached. */
export interface Negotiated {
  size: number;
  /** The transmission flags (NBD_FLAG_*). */
  flags: number;
  blockSize?: BlockSizeConstraints;
}

/** Option reply payloads we accept (strings are at most 4096 bytes; a few fields around them). */
const MAX_OPTION_REPLY_LENGTH = 64 * 1024;

/** Negotiates `exportName` on `connection`; rejects with an NbdError when the server will not serve it. */
export async function negotiate(
  connection: NbdConnection,
  reader: ByteReader,
  exportName: string,
): Promise<Negotiated> {
  const { fixed, noZeroes } = await greet(connection, reader);
  if (fixed) {
    await connection.write(encodeOption(OPT_GO, encodeInfoRequest(exportName, [INFO_BLOCK_SIZE])));
    let result: Negotiated | undefined;
    let blockSize: BlockSizeConstraints | undefined;
    for (;;) {
      const { type, payload } = await readOptionReply(reader, OPT_GO);
      if (type === REP_INFO) {
        const info = decodeInfo(payload);
        if (info?.kind === 'export') result = { size: info.size, flags: info.flags };
        else if (info?.kind === 'blockSize') blockSize = info.blockSize;
        continue;
      }
      if (type === REP_ACK) {
        if (!result) throw new NbdProtocolError('server accepted NBD_OPT_GO without sending NBD_INFO_EXPORT');
        if (blockSize) result.blockSize = blockSize;
        return result;
      }
      if (type === REP_ERR_UNSUP) break; // an old server: fall back to NBD_OPT_EXPORT_NAME
      await connection.write(encodeOption(OPT_ABORT)).catch(() => undefined);
      throw optionError(type, payload, `server refused export '${exportName}'`);
    }
  }
  await connection.write(encodeOption(OPT_EXPORT_NAME, encodeUtf8(exportName)));
  const reply = await reader.readOrEnd(EXPORT_NAME_REPLY_SIZE, 'export information').catch(() => null);
  if (!reply) {
    throw new NbdOptionError(
      0,
      `server closed the connection after NBD_OPT_EXPORT_NAME; export '${exportName}' probably does not exist`,
    );
  }
  const { size, flags } = decodeExportNameReply(reply);
  if (!noZeroes) await reader.skip(EXPORT_NAME_REPLY_PADDING, 'export information padding');
  return { size, flags };
}

/** The server's export names (NBD_OPT_LIST), then NBD_OPT_ABORT. */
export async function listExports(connection: NbdConnection, reader: ByteReader): Promise<string[]> {
  const { fixed } = await greet(connection, reader);
  if (!fixed) throw new NbdError('server does not support fixed newstyle negotiation, so cannot list');
  await connection.write(encodeOption(OPT_LIST));
  const names: string[] = [];
  for (;;) {
    const { type, payload } = await readOptionReply(reader, OPT_LIST);
    if (type === REP_SERVER) names.push(decodeServerReply(payload));
    else if (type === REP_ACK) break;
    else throw optionError(type, payload, 'server refused to list its exports');
  }
  await connection.write(encodeOption(OPT_ABORT)).catch(() => undefined);
  return names;
}

/** Reads the server's greeting and answers with our flags. */
async function greet(
  connection: NbdConnection,
  reader: ByteReader,
): Promise<{ fixed: boolean; noZeroes: boolean }> {
  const closedEarly = (error: unknown) => {
    throw error instanceof NbdDisconnectedError
      ? new NbdDisconnectedError(`server closed the connection during its greeting (${error.message})`)
      : error;
  };
  // The magic first, on its own, so that a peer sending a few bytes of something else fails fast.
  const magic = await reader.readOrEnd(GREETING_MAGIC_SIZE, 'server greeting').catch(closedEarly);
  if (!magic) throw new NbdDisconnectedError('server closed the connection before sending its greeting');
  if (!isGreetingMagic(magic)) {
    throw new NbdProtocolError(`not an NBD server: expected NBDMAGIC, got ${describeBytes(magic)}`);
  }
  const rest = (await reader
    .read(GREETING_SIZE - GREETING_MAGIC_SIZE, 'server greeting')
    .catch(closedEarly)) as Uint8Array;
  const hello = new Uint8Array(GREETING_SIZE);
  hello.set(magic);
  hello.set(rest, GREETING_MAGIC_SIZE);
  const { version, flags } = decodeGreeting(hello);
  if (version === CLISERV_MAGIC) {
    throw new NbdProtocolError('server uses oldstyle negotiation, which is not supported');
  }
  if (version !== IHAVEOPT) {
    throw new NbdProtocolError(
      `not an NBD server: expected IHAVEOPT after NBDMAGIC, got ${describeBytes(hello)}`,
    );
  }
  const fixed = (flags & FLAG_FIXED_NEWSTYLE) !== 0;
  const noZeroes = (flags & FLAG_NO_ZEROES) !== 0;
  await connection.write(
    encodeClientFlags((fixed ? FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? FLAG_C_NO_ZEROES : 0)),
  );
  return { fixed, noZeroes };
}

async function readOptionReply(
  reader: ByteReader,
  option: number,
): Promise<{ type: number; payload: Uint8Array }> {
  const header = await reader.readOrEnd(OPTION_REPLY_HEADER_SIZE, `reply to ${optionName(option)}`);
  if (!header) {
    throw new NbdDisconnectedError(`server closed the connection instead of answering ${optionName(option)}`);
  }
  const reply = decodeOptionReplyHeader(header);
  if (reply.magic !== OPTION_REPLY_MAGIC) {
    throw new NbdProtocolError(`bad option reply magic: got ${describeBytes(header)}`);
  }
  if (reply.option !== option) {
    throw new NbdProtocolError(
      `server answered ${optionName(reply.option)} when asked ${optionName(option)}`,
    );
  }
  if (reply.length > MAX_OPTION_REPLY_LENGTH) {
    throw new NbdProtocolError(`option reply of ${reply.length} bytes is implausibly large`);
  }
  const payload = await reader.read(reply.length, `reply to ${optionName(option)}`);
  return { type: reply.type, payload };
}

function optionError(type: number, payload: Uint8Array, what: string): NbdOptionError {
  const message = type & REP_FLAG_ERROR ? decodeUtf8(payload) : '';
  return new NbdOptionError(type, `${what}: ${replyName(type)}${message ? ` (${message})` : ''}`, message);
}
