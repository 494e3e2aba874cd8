import { type MessageArgs, type MessageId, type RedfishMessage, redfishMessage } from './messages.ts';

/**
 * What route handlers and hooks throw to answer with a Redfish error; the one error handler
 * (error-handler.ts) renders it. Headers travel with it (`WWW-Authenticate` on 401, `Retry-After` on 503).
 * Build one with the factories below, never by hand: each names the failure and carries its status, so
 * the same failure always answers the same way.
 */
export class RedfishError extends Error {
  constructor(
    readonly statusCode: number,
    readonly messages: readonly RedfishMessage[],
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(messages.map((m) => m.Message).join(' '));
    this.name = 'RedfishError';
  }
}

function one<Id extends MessageId>(
  statusCode: number,
  id: Id,
  args: MessageArgs<Id>,
  options: { relatedProperties?: string[]; headers?: Record<string, string> } = {},
): RedfishError {
  return new RedfishError(statusCode, [redfishMessage(id, args, options.relatedProperties)], options.headers);
}

/** `#/Name`: the JSON pointer to the request property a message is about. */
const pointer = (property: string) => [`#/${property}`];

export const errors = {
  // 400: the request itself is wrong.
  /** Body problems found by schema validation or by a handler, one message each. */
  badRequest: (messages: readonly RedfishMessage[]) => new RedfishError(400, messages),
  malformedJson: () => one(400, 'MalformedJSON', []),
  noOperation: () => one(400, 'NoOperation', []),
  actionNotSupported: (action: string) => one(400, 'ActionNotSupported', [action]),
  propertyNotWritable: (property: string) => one(400, 'PropertyNotWritable', [property]),
  /** A value the service refuses; `shown` is what the message may repeat (never a password). */
  propertyValueFormat: (shown: string, property: string) =>
    one(400, 'PropertyValueFormatError', [shown, property], { relatedProperties: pointer(property) }),
  propertyValueOutOfRange: (value: string, property: string) =>
    one(400, 'PropertyValueOutOfRange', [value, property], { relatedProperties: pointer(property) }),
  propertyValueIncorrect: (property: string, value: string) =>
    one(400, 'PropertyValueIncorrect', [property, value], { relatedProperties: pointer(property) }),
  resourceAtUriInUnknownFormat: (uri: string) => one(400, 'ResourceAtUriInUnknownFormat', [uri]),

  // 401/403: who is asking.
  noValidSession: (headers: Record<string, string> = {}) => one(401, 'NoValidSession', [], { headers }),
  insufficientPrivilege: () => one(403, 'InsufficientPrivilege', []),
  /** A cookie session's request without the matching XSRF token. */
  xsrfTokenInvalid: () => one(403, 'HeaderInvalid', ['X-XSRF-TOKEN']),

  // 404/405/406/409/412/413/415: the resource and the protocol.
  resourceNotFound: (type: string, id: string) => one(404, 'ResourceNotFound', [type, id]),
  operationNotAllowed: () => one(405, 'OperationNotAllowed', []),
  notAcceptable: () => one(406, 'HeaderInvalid', ['Accept']),
  resourceInUse: () => one(409, 'ResourceInUse', []),
  resourceAlreadyExists: (type: string, property: string, value: string) =>
    one(409, 'ResourceAlreadyExists', [type, property, value], { relatedProperties: pointer(property) }),
  resourceCannotBeDeleted: () => one(409, 'ResourceCannotBeDeleted', []),
  preconditionFailed: () => one(412, 'PreconditionFailed', []),
  odataVersionUnsupported: () => one(412, 'HeaderInvalid', ['OData-Version']),
  payloadTooLarge: () => one(413, 'PayloadTooLarge', []),
  unsupportedMediaType: () => one(415, 'HeaderInvalid', ['Content-Type']),
  /** Any other client error fastify raised (its status kept, the generic message). */
  clientError: (statusCode: number) => one(statusCode, 'GeneralError', []),

  // 5xx: the service.
  internalError: () => one(500, 'InternalError', []),
  queryParameterUnsupported: (name: string) => one(501, 'QueryParameterUnsupported', [name]),
  /** Too many failed logins from one address: the same message, with 429. */
  tooManyRequests: (retryAfterSeconds: number) =>
    one(429, 'ServiceTemporarilyUnavailable', [String(retryAfterSeconds)], {
      headers: { 'Retry-After': String(retryAfterSeconds) },
    }),
  sessionLimitExceeded: () => one(503, 'SessionLimitExceeded', []),
  serviceTemporarilyUnavailable: (retryAfterSeconds: number) =>
    one(503, 'ServiceTemporarilyUnavailable', [String(retryAfterSeconds)], {
      headers: { 'Retry-After': String(retryAfterSeconds) },
    }),
} as const;
