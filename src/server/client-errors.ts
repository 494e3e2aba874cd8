import type { Socket } from 'node:net';
import { errorBody, redfishMessage } from '../redfish/messages.ts';

/**
 * Requests Node's HTTP parser rejects before Fastify sees them. An unknown method (`FAKEMETHOD`) is a
 * well-formed request the service does not implement: Redfish wants 501, not the parser's 400.
 */
export function answerClientError(error: Error & { code?: string }, socket: Socket) {
  if (!socket.writable || error.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
  const unknownMethod = error.code === 'HPE_INVALID_METHOD';
  const status = unknownMethod ? '501 Not Implemented' : '400 Bad Request';
  const body = JSON.stringify(
    errorBody([redfishMessage(unknownMethod ? 'OperationNotAllowed' : 'GeneralError', [])]),
  );
  socket.end(
    [
      `HTTP/1.1 ${status}`,
      'Content-Type: application/json; charset=utf-8',
      'OData-Version: 4.0',
      `Content-Length: ${Buffer.byteLength(body)}`,
      'Connection: close',
      '',
      body,
    ].join('\r\n'),
  );
}
