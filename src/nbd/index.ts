/**
 * The NBD protocol module: server, client and their contracts, free of Node-specific APIs so the
 * browser uses the same code. Node sockets are adapted by `./node-connection.ts`.
 */
export type { BlockDevice, BlockSizeConstraints } from './block-device.ts';
export { checkBlockDevice, defaultBlockSize } from './block-device.ts';
export { NbdClient, type NbdClientOptions } from './client.ts';
export type { NbdConnection } from './connection.ts';
export * as nbdConstants from './constants.ts';
export {
  NbdDisconnectedError,
  NbdError,
  NbdOptionError,
  NbdProtocolError,
  NbdRequestError,
} from './errors.ts';
export { createConnectionPair, MemoryBlockDevice, type MemoryBlockDeviceOptions } from './memory.ts';
export {
  errnoOf,
  type NbdRequestInfo,
  type NbdRequestType,
  type ServeNbdOptions,
  serveNbd,
} from './server.ts';
