import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { errors, RedfishError } from './errors.ts';
import { errorBody, type RedfishMessage } from './messages.ts';
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
    return errors.badRequest(messages);
  }
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return errors.unsupportedMediaType();
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return errors.payloadTooLarge();
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return errors.malformedJson();
  }
  // JSON.parse failures from the body parser arrive as a plain SyntaxError marked 400.
  if (error instanceof SyntaxError && error.statusCode === 400) return errors.malformedJson();
  if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
    return errors.clientError(error.statusCode);
  }
  return errors.internalError();
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
