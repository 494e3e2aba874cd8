import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { errorBody, RedfishError, type RedfishMessage, redfishMessage } from './messages.ts';
import { validationMessages } from './validation.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Set on action routes (`VirtualMedia.InsertMedia`): body problems use the ActionParameter* messages. */
    action?: string;
  }
}

/** Fastify's own failures (parsing, limits) as the Redfish errors a client expects. */
function translate(error: FastifyError, request: FastifyRequest): RedfishError {
  if (error instanceof RedfishError) return error;
  if (error.validation) {
    const messages = validationMessages(error.validation, request.body, request.routeOptions.config.action);
    return new RedfishError(400, messages);
  }
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return RedfishError.of(415, 'HeaderInvalid', ['Content-Type']);
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return RedfishError.of(413, 'PayloadTooLarge', []);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return RedfishError.of(400, 'MalformedJSON', []);
  }
  // JSON.parse failures from the body parser arrive as a plain SyntaxError marked 400.
  if (error instanceof SyntaxError && error.statusCode === 400)
    return RedfishError.of(400, 'MalformedJSON', []);
  if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
    return new RedfishError(error.statusCode, [redfishMessage('GeneralError', [])]);
  }
  return RedfishError.of(500, 'InternalError', []);
}

/** The one error handler: every failure leaves as a Redfish error body built from the message registry. */
export function renderError(error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
  const redfish = translate(error, request);
  if (redfish.statusCode >= 500) request.log.error({ err: error }, 'request failed');
  else
    request.log.debug(
      { statusCode: redfish.statusCode, messageIds: ids(redfish.messages) },
      'request refused',
    );
  return reply.code(redfish.statusCode).headers(redfish.headers).send(errorBody(redfish.messages));
}

function ids(messages: readonly RedfishMessage[]) {
  return messages.map((m) => m.MessageId);
}
