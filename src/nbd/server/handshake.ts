/**
 * The server's handshake (proto.md "Fixed newstyle negotiation"), up to the export the client chose.
 *
 * NBD_FLAG_FIXED_NEWSTYLE and NBD_FLAG_NO_ZEROES are offered, the client's NO_ZEROES honoured, unknown
 * client flags refused. Options: NBD_OPT_GO and NBD_OPT_INFO (replying NBD_INFO_EXPORT and
 * NBD_INFO_BLOCK_SIZE, plus NBD_INFO_NAME when asked; NBD_REP_ERR_UNKNOWN for an unknown export),
 * NBD_OPT_EXPORT_NAME, NBD_OPT_LIST (NBD_REP_ERR_POLICY unless `listExports` is given) and NBD_OPT_ABORT;
 * every other option (STARTTLS, STRUCTURED_REPLY, meta contexts, …) gets NBD_REP_ERR_UNSUP and
 * negotiation continues. Option data beyond what any supported option needs is skipped, not buffered.
 * At most MAX_OPTIONS options are answered: one more ends the session.
 */
import {
  type BlockDevice,
  type BlockSizeConstraints,
  checkBlockDevice,
  defaultBlockSize,
} from '../block-device.ts';
import type { ByteReader } from '../byte-reader.ts';
import {
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_HAS_FLAGS,
  FLAG_NO_ZEROES,
  FLAG_READ_ONLY,
  FLAG_SEND_FLUSH,
  FLAG_SEND_FUA,
  FLAG_SEND_TRIM,
  IHAVEOPT,
  INFO_NAME,
  MAX_STRING_LENGTH,
  OPT_ABORT,
  OPT_EXPORT_NAME,
  OPT_GO,
  OPT_INFO,
  OPT_LIST,
  optionName,
  REP_ACK,
  REP_ERR_INVALID,
  REP_ERR_POLICY,
  REP_ERR_SHUTDOWN,
  REP_ERR_TOO_BIG,
  REP_ERR_UNKNOWN,
  REP_ERR_UNSUP,
  REP_INFO,
  REP_SERVER,
} from '../constants.ts';
import { NbdError, NbdProtocolError } from '../errors.ts';
import {
  CLIENT_FLAGS_SIZE,
  decodeClientFlags,
  decodeInfoRequest,
  decodeOptionHeader,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoName,
  encodeOptionReply,
  encodeServerReply,
  type InfoRequest,
  OPTION_HEADER_SIZE,
} from '../protocol.ts';
import { decodeUtf8, describeBytes } from '../wire.ts';

/**
 * Options answered in one handshake, as in nbdkit (MAX_NR_OPTIONS): a client that has not chosen an
 * export after that many is broken or hostile, and would otherwise hold the session (and its slot) for
 * as long as it likes.
 */
export const MAX_OPTIONS = 32;
/** Option data we are willing to buffer: an export name (≤ 4096 bytes) plus framing and info requests. */
const MAX_OPTION_LENGTH = 3 * MAX_STRING_LENGTH;
const SUPPORTED_OPTIONS = new Set([OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO]);

/** The block device for an export name ('' is the default export), or undefined when there is none. */
export type ResolveExport = (name: string) => BlockDevice | undefined | Promise<BlockDevice | undefined>;

export interface HandshakeOptions {
  /** Export names for NBD_OPT_LIST; without it listing is refused with NBD_REP_ERR_POLICY. */
  listExports?: () => string[] | Promise<string[]>;
}

/** What the handshake needs of the session around it. */
export interface HandshakeSession {
  readonly reader: ByteReader;
  /** Sends to the client; rejects once the session is closed. */
  write(data: Uint8Array): Promise<void>;
  /** The session is ending: every option but NBD_OPT_EXPORT_NAME is answered NBD_REP_ERR_SHUTDOWN. */
  readonly aborting: boolean;
}

/** The export the client chose, as transmission serves it. */
export interface Export {
  name: string;
  device: BlockDevice;
  /** The transmission flags (NBD_FLAG_*) announced for it. */
  flags: number;
  /** The device's constraints, or the defaults: what NBD_INFO_BLOCK_SIZE announces and requests obey. */
  blockSize: BlockSizeConstraints;
}

/**
 * Greets the client and answers its options until it picks an export (returned) or leaves (null).
 * Rejects with an NbdError on a protocol violation, after MAX_OPTIONS options without a choice, or when
 * the client insists on an unknown export through NBD_OPT_EXPORT_NAME.
 */
export function negotiate(
  session: HandshakeSession,
  resolveExport: ResolveExport,
  options: HandshakeOptions,
): Promise<Export | null> {
  return new ServerHandshake(session, resolveExport, options).run();
}

class ServerHandshake {
  constructor(
    private readonly session: HandshakeSession,
    private readonly resolveExport: ResolveExport,
    private readonly options: HandshakeOptions,
  ) {}

  async run(): Promise<Export | null> {
    const { reader } = this.session;
    await this.session.write(encodeGreeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));

    const clientFlagBytes = await reader.readOrEnd(CLIENT_FLAGS_SIZE, 'client flags');
    if (!clientFlagBytes) return null;
    const clientFlags = decodeClientFlags(clientFlagBytes);
    if (clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) {
      throw new NbdProtocolError(
        `client sent unknown handshake flags ${describeBytes(clientFlagBytes)}; is it an NBD client?`,
      );
    }
    const noZeroes = (clientFlags & FLAG_C_NO_ZEROES) !== 0;

    for (let count = 1; ; count++) {
      const header = await reader.readOrEnd(OPTION_HEADER_SIZE, 'option header');
      if (!header) return null;
      const { magic, option, length } = decodeOptionHeader(header);
      if (magic !== IHAVEOPT) {
        throw new NbdProtocolError(`expected an option (IHAVEOPT), got ${describeBytes(header)}`);
      }
      if (count > MAX_OPTIONS) {
        throw new NbdProtocolError(
          `client sent more than ${MAX_OPTIONS} options without choosing an export ` +
            `(the last was ${optionName(option)})`,
        );
      }
      if (!SUPPORTED_OPTIONS.has(option)) {
        await reader.skip(length, `${optionName(option)} data`);
        await this.optionReply(option, REP_ERR_UNSUP, `${optionName(option)} is not supported`);
        continue;
      }
      if (length > MAX_OPTION_LENGTH) {
        if (option === OPT_EXPORT_NAME) {
          throw new NbdProtocolError(`NBD_OPT_EXPORT_NAME with ${length} bytes of data`);
        }
        await reader.skip(length, `${optionName(option)} data`);
        await this.optionReply(option, REP_ERR_TOO_BIG, `${length} bytes of option data is too much`);
        continue;
      }
      const data = await reader.read(length, `${optionName(option)} data`);
      if (this.session.aborting) {
        if (option === OPT_EXPORT_NAME) return null;
        await this.optionReply(option, REP_ERR_SHUTDOWN, 'server is shutting down');
        continue;
      }

      switch (option) {
        case OPT_ABORT:
          await this.optionReply(option, REP_ACK).catch(() => undefined);
          return null;
        case OPT_LIST:
          await this.listExports(data);
          break;
        case OPT_EXPORT_NAME: {
          const name = decodeUtf8(data);
          const chosen = await this.lookUp(name);
          if (!chosen) {
            // The option cannot carry an error: the spec says to terminate the session.
            throw new NbdError(`client asked for unknown export '${name}' (NBD_OPT_EXPORT_NAME)`);
          }
          await this.session.write(encodeExportNameReply(chosen.device.size, chosen.flags, noZeroes));
          return chosen;
        }
        default: {
          const chosen = await this.infoOrGo(option, data);
          if (chosen && option === OPT_GO) return chosen;
        }
      }
    }
  }

  private async lookUp(name: string): Promise<Export | undefined> {
    let device: BlockDevice | undefined;
    try {
      device = await this.resolveExport(name);
    } catch {
      return undefined;
    }
    if (!device) return undefined;
    checkBlockDevice(device);
    let flags = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH;
    if (device.readOnly) flags |= FLAG_READ_ONLY;
    else {
      flags |= FLAG_SEND_FUA;
      if (typeof device.trim === 'function') flags |= FLAG_SEND_TRIM;
    }
    return { name, device, flags, blockSize: device.blockSize ?? defaultBlockSize };
  }

  private async listExports(data: Uint8Array): Promise<void> {
    if (data.length !== 0) {
      await this.optionReply(OPT_LIST, REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
      return;
    }
    if (!this.options.listExports) {
      await this.optionReply(OPT_LIST, REP_ERR_POLICY, 'export listing is disabled');
      return;
    }
    let names: string[];
    try {
      names = await this.options.listExports();
    } catch {
      await this.optionReply(OPT_LIST, REP_ERR_POLICY, 'export list unavailable');
      return;
    }
    for (const name of names) await this.optionReply(OPT_LIST, REP_SERVER, encodeServerReply(name));
    await this.optionReply(OPT_LIST, REP_ACK);
  }

  /** NBD_OPT_INFO / NBD_OPT_GO; returns the export when the reply ended in NBD_REP_ACK. */
  private async infoOrGo(option: number, data: Uint8Array): Promise<Export | undefined> {
    let request: InfoRequest;
    try {
      request = decodeInfoRequest(data);
    } catch (error) {
      if (!(error instanceof NbdProtocolError)) throw error;
      await this.optionReply(option, REP_ERR_INVALID, error.message);
      return undefined;
    }
    const { name, infos } = request;
    const chosen = await this.lookUp(name);
    if (!chosen) {
      await this.optionReply(option, REP_ERR_UNKNOWN, `unknown export '${name}'`);
      return undefined;
    }
    await this.optionReply(option, REP_INFO, encodeInfoExport(chosen.device.size, chosen.flags));
    // Sent whether asked for or not (clients ignore what they did not ask for); a client that asked
    // has promised to honour it.
    await this.optionReply(option, REP_INFO, encodeInfoBlockSize(chosen.blockSize));
    if (infos.includes(INFO_NAME)) await this.optionReply(option, REP_INFO, encodeInfoName(name));
    await this.optionReply(option, REP_ACK);
    return chosen;
  }

  private optionReply(option: number, type: number, data?: Uint8Array | string): Promise<void> {
    return this.session.write(encodeOptionReply(option, type, data));
  }
}
