/**
 * The one place Redfish messages are built. Every error body and every `@Message.ExtendedInfo` entry the
 * server sends comes from here, with MessageIds from the DMTF Base registry. The definitions are copied
 * into code because a deployed BMC has no registry files beside it; test/redfish/messages.test.ts checks
 * each one against the published Base.1.22.1 registry.
 */

export const baseRegistry = { prefix: 'Base', version: '1.22.1' } as const;

type Severity = 'OK' | 'Warning' | 'Critical';

interface MessageDefinition {
  readonly message: string;
  readonly severity: Severity;
  readonly args: 0 | 1 | 2 | 3;
  readonly resolution: string;
}

export const baseMessages = {
  AccessDenied: {
    message: "While attempting to establish a connection to '%1', the service denied access.",
    severity: 'Critical',
    args: 1,
    resolution:
      'Attempt to ensure that the URI is correct and that the service has the appropriate credentials.',
  },
  AccountModified: {
    message: 'The account was successfully modified.',
    severity: 'OK',
    args: 0,
    resolution: 'None.',
  },
  AccountNotModified: {
    message: 'The account modification request failed.',
    severity: 'Warning',
    args: 0,
    resolution: 'The modification may have failed due to permission issues or issues with the request body.',
  },
  AccountRemoved: {
    message: 'The account was successfully removed.',
    severity: 'OK',
    args: 0,
    resolution: 'None.',
  },
  ActionNotSupported: {
    message: 'The action %1 is not supported by the resource.',
    severity: 'Critical',
    args: 1,
    resolution: 'Check the Actions property in the resource for the supported actions.',
  },
  ActionParameterMissing: {
    message: 'The action %1 requires the parameter %2 to be present in the request body.',
    severity: 'Critical',
    args: 2,
    resolution:
      'Supply the action with the required parameter in the request body when the request is resubmitted.',
  },
  ActionParameterNotSupported: {
    message: 'The parameter %1 for the action %2 is not supported on the target resource.',
    severity: 'Warning',
    args: 2,
    resolution: 'Remove the parameter supplied and resubmit the request if the operation failed.',
  },
  ActionParameterUnknown: {
    message: 'The action %1 was submitted with the invalid parameter %2.',
    severity: 'Warning',
    args: 2,
    resolution: 'Correct the invalid action parameter and resubmit the request if the operation failed.',
  },
  ActionParameterValueConflict: {
    message:
      "The parameter '%1' with the requested value of '%2' does not meet the constraints of the implementation.",
    severity: 'Warning',
    args: 2,
    resolution: 'None.',
  },
  ActionParameterValueError: {
    message: 'The value for the parameter %1 in the action %2 is invalid.',
    severity: 'Warning',
    args: 2,
    resolution:
      'Correct the value for the parameter in the request body and resubmit the request if the operation failed.',
  },
  ActionParameterValueFormatError: {
    message:
      "The value '%1' for the parameter %2 in the action %3 is not a format that the parameter can accept.",
    severity: 'Warning',
    args: 3,
    resolution:
      'Correct the value for the parameter in the request body and resubmit the request if the operation failed.',
  },
  ActionParameterValueTypeError: {
    message:
      "The value '%1' for the parameter %2 in the action %3 is not a type that the parameter can accept.",
    severity: 'Warning',
    args: 3,
    resolution:
      'Correct the value for the parameter in the request body and resubmit the request if the operation failed.',
  },
  CouldNotEstablishConnection: {
    message: "The service failed to establish a connection with the URI '%1'.",
    severity: 'Critical',
    args: 1,
    resolution:
      'Ensure that the URI contains a valid and reachable node name, protocol information, and other URI components.',
  },
  CreateFailedMissingReqProperties: {
    message: 'The create operation failed because the required property %1 was missing from the request.',
    severity: 'Critical',
    args: 1,
    resolution:
      'Correct the body to include the required property with a valid value and resubmit the request if the operation failed.',
  },
  Created: {
    message: 'The resource was created successfully.',
    severity: 'OK',
    args: 0,
    resolution: 'None.',
  },
  GeneralError: {
    message:
      'A general error has occurred.  See Resolution for information on how to resolve the error, or @Message.ExtendedInfo if Resolution is not provided.',
    severity: 'Critical',
    args: 0,
    resolution: 'None.',
  },
  HeaderInvalid: {
    message: "Header '%1' is invalid.",
    severity: 'Critical',
    args: 1,
    resolution: 'Resubmit the request with a valid request header.',
  },
  InsufficientPrivilege: {
    message:
      'There are insufficient privileges for the account or credentials associated with the current session to perform the requested operation.',
    severity: 'Critical',
    args: 0,
    resolution:
      'Either abandon the operation or change the associated access rights and resubmit the request if the operation failed.',
  },
  InternalError: {
    message: 'The request failed due to an internal service error.  The service is still operational.',
    severity: 'Critical',
    args: 0,
    resolution: 'Resubmit the request.  If the problem persists, consider resetting the service.',
  },
  MalformedJSON: {
    message:
      'The request body submitted was malformed JSON and could not be parsed by the receiving service.',
    severity: 'Critical',
    args: 0,
    resolution: 'Ensure that the request body is valid JSON and resubmit the request.',
  },
  NoOperation: {
    message:
      'The request body submitted contain no data to act upon and no changes to the resource took place.',
    severity: 'Warning',
    args: 0,
    resolution: 'Add properties in the JSON object and resubmit the request.',
  },
  NoValidSession: {
    message: 'There is no valid session established with the implementation.',
    severity: 'Critical',
    args: 0,
    resolution: 'Establish a session before attempting any operations.',
  },
  OperationFailed: {
    message:
      'An error occurred internal to the service as part of the overall request.  Partial results may have been returned.',
    severity: 'Warning',
    args: 0,
    resolution: 'Resubmit the request.  If the problem persists, consider resetting the service or provider.',
  },
  OperationNotAllowed: {
    message: 'The HTTP method is not allowed on this resource.',
    severity: 'Critical',
    args: 0,
    resolution: 'None.',
  },
  OperationTimeout: {
    message:
      'A timeout internal to the service occurred as part of the request.  Partial results may have been returned.',
    severity: 'Warning',
    args: 0,
    resolution: 'Resubmit the request.  If the problem persists, consider resetting the service or provider.',
  },
  PasswordChangeRequired: {
    message:
      "The password provided for this account must be changed before access is granted.  PATCH the Password property for this account located at the target URI '%1' to complete this process.",
    severity: 'Critical',
    args: 1,
    resolution:
      'Change the password for this account using a PATCH to the Password property at the URI provided.',
  },
  PayloadTooLarge: {
    message: 'The supplied payload exceeds the maximum size supported by the service.',
    severity: 'Critical',
    args: 0,
    resolution: 'Check that the supplied payload is correct and supported by this service.',
  },
  PreconditionFailed: {
    message: 'The ETag supplied did not match the ETag required to change this resource.',
    severity: 'Critical',
    args: 0,
    resolution: 'Try the operation again using the appropriate ETag.',
  },
  PropertyMissing: {
    message: 'The property %1 is a required property and must be included in the request.',
    severity: 'Warning',
    args: 1,
    resolution:
      'Ensure that the property is in the request body and has a valid value and resubmit the request if the operation failed.',
  },
  PropertyNotWritable: {
    message: 'The property %1 is a read-only property and cannot be assigned a value.',
    severity: 'Warning',
    args: 1,
    resolution: 'Remove the property from the request body and resubmit the request if the operation failed.',
  },
  PropertyUnknown: {
    message: 'The property %1 is not in the list of valid properties for the resource.',
    severity: 'Warning',
    args: 1,
    resolution:
      'Remove the unknown property from the request body and resubmit the request if the operation failed.',
  },
  PropertyValueConflict: {
    message:
      "The property '%1' could not be written because its value would conflict with the value of the '%2' property.",
    severity: 'Warning',
    args: 2,
    resolution: 'None.',
  },
  PropertyValueError: {
    message: 'The value provided for the property %1 is not valid.',
    severity: 'Warning',
    args: 1,
    resolution:
      'Correct the value for the property in the request body and resubmit the request if the operation failed.',
  },
  PropertyValueFormatError: {
    message: "The value '%1' for the property %2 is not a format that the property can accept.",
    severity: 'Warning',
    args: 2,
    resolution:
      'Correct the value for the property in the request body and resubmit the request if the operation failed.',
  },
  PropertyValueIncorrect: {
    message:
      "The property '%1' with the requested value of '%2' could not be written because the value is not acceptable for the property.",
    severity: 'Warning',
    args: 2,
    resolution: 'None.',
  },
  PropertyValueNotInList: {
    message: "The value '%1' for the property %2 is not in the list of acceptable values.",
    severity: 'Warning',
    args: 2,
    resolution:
      'Choose a value from the enumeration list that the implementation can support and resubmit the request if the operation failed.',
  },
  PropertyValueOutOfRange: {
    message: "The value '%1' for the property %2 is not in the supported range of acceptable values.",
    severity: 'Warning',
    args: 2,
    resolution:
      'Correct the value for the property in the request body and resubmit the request if the operation failed.',
  },
  PropertyValueTypeError: {
    message: "The value '%1' for the property %2 is not a type that the property can accept.",
    severity: 'Warning',
    args: 2,
    resolution:
      'Correct the value for the property in the request body and resubmit the request if the operation failed.',
  },
  QueryNotSupported: {
    message: 'Querying is not supported by the implementation.',
    severity: 'Warning',
    args: 0,
    resolution: 'Remove the query parameters and resubmit the request if the operation failed.',
  },
  QueryParameterUnsupported: {
    message: "Query parameter '%1' is not supported.",
    severity: 'Warning',
    args: 1,
    resolution: 'Correct or remove the query parameter and resubmit the request.',
  },
  QueryParameterValueTypeError: {
    message: "The value '%1' for the query parameter %2 is not a type that the parameter can accept.",
    severity: 'Warning',
    args: 2,
    resolution:
      'Correct the value for the query parameter in the request and resubmit the request if the operation failed.',
  },
  ResourceAlreadyExists: {
    message: "The requested resource of type %1 with the property %2 with the value '%3' already exists.",
    severity: 'Critical',
    args: 3,
    resolution: 'Do not repeat the create operation as the resource was already created.',
  },
  ResourceAtUriInUnknownFormat: {
    message: "The resource at '%1' is in a format not recognized by the service.",
    severity: 'Critical',
    args: 1,
    resolution: 'Place an image or resource or file that is recognized by the service at the URI.',
  },
  ResourceAtUriUnauthorized: {
    message: "While accessing the resource at '%1', the service received an authorization error '%2'.",
    severity: 'Critical',
    args: 2,
    resolution:
      'Ensure that the appropriate access is provided for the service in order for it to access the URI.',
  },
  ResourceCannotBeDeleted: {
    message: 'The delete request failed because the resource requested cannot be deleted.',
    severity: 'Critical',
    args: 0,
    resolution: 'Do not attempt to delete a non-deletable resource.',
  },
  ResourceInUse: {
    message: 'The change to the requested resource failed because the resource is in use or in transition.',
    severity: 'Warning',
    args: 0,
    resolution: 'Remove the condition and resubmit the request if the operation failed.',
  },
  ResourceNotFound: {
    message: "The requested resource of type %1 named '%2' was not found.",
    severity: 'Critical',
    args: 2,
    resolution: 'Provide a valid resource identifier and resubmit the request.',
  },
  ServiceTemporarilyUnavailable: {
    message: 'The service is temporarily unavailable.  Retry in %1 seconds.',
    severity: 'Critical',
    args: 1,
    resolution: 'Wait for the indicated retry duration and retry the operation.',
  },
  SessionLimitExceeded: {
    message:
      'The session establishment failed due to the number of simultaneous sessions exceeding the limit of the implementation.',
    severity: 'Critical',
    args: 0,
    resolution:
      'Reduce the number of other sessions before trying to establish the session or increase the limit of simultaneous sessions, if supported.',
  },
  Success: { message: 'The request completed successfully.', severity: 'OK', args: 0, resolution: 'None.' },
} as const satisfies Record<string, MessageDefinition>;

export type MessageId = keyof typeof baseMessages;

interface ArgTuples {
  0: [];
  1: [string];
  2: [string, string];
  3: [string, string, string];
}

/** The argument tuple a message takes: its length is checked at compile time. */
export type MessageArgs<Id extends MessageId> = ArgTuples[(typeof baseMessages)[Id]['args']];

export interface RedfishMessage {
  MessageId: string;
  Message: string;
  MessageArgs: string[];
  MessageSeverity: Severity;
  Severity: Severity;
  Resolution: string;
  RelatedProperties?: string[];
}

/**
 * Builds one message. `relatedProperties` are JSON pointers (`#/Password`) to the request properties the
 * message is about, so clients can highlight the field at fault.
 */
export function redfishMessage<Id extends MessageId>(
  id: Id,
  args: MessageArgs<Id>,
  relatedProperties?: string[],
): RedfishMessage {
  const definition: MessageDefinition = baseMessages[id];
  const values: readonly string[] = args;
  const text = definition.message.replace(/%(\d+)/g, (_, n: string) => values[Number(n) - 1] ?? '');
  return {
    MessageId: `${baseRegistry.prefix}.${baseRegistry.version}.${id}`,
    Message: text,
    MessageArgs: [...values],
    MessageSeverity: definition.severity,
    Severity: definition.severity,
    Resolution: definition.resolution,
    ...(relatedProperties?.length ? { RelatedProperties: relatedProperties } : {}),
  };
}

/** The `error` body of a failed Redfish request, per the Redfish specification (clause "Error responses"). */
export function errorBody(messages: readonly RedfishMessage[]) {
  // With one message its id and text head the error; with several the generic GeneralError summarises them.
  const [first] = messages;
  const head = messages.length === 1 && first ? first : redfishMessage('GeneralError', []);
  return { error: { code: head.MessageId, message: head.Message, '@Message.ExtendedInfo': [...messages] } };
}
