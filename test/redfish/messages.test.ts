import assert from 'node:assert/strict';
import { test } from 'node:test';
import { errors } from '../../src/redfish/errors.ts';
import { baseMessages, errorBody, redfishMessage } from '../../src/redfish/messages.ts';
import { assertValidRedfish } from '../helpers/redfish-schema.ts';

test('the messages later features need are all defined', () => {
  for (const id of [
    'ActionParameterMissing',
    'ActionParameterNotSupported',
    'ActionParameterUnknown',
    'ActionParameterValueTypeError',
    'ActionParameterValueFormatError',
    'ResourceAtUriInUnknownFormat',
    'ResourceInUse',
    'ResourceNotFound',
    'ServiceTemporarilyUnavailable',
    'InsufficientPrivilege',
    'InternalError',
    'PropertyValueTypeError',
    'PropertyValueFormatError',
    'PropertyUnknown',
    'PropertyNotWritable',
    'MalformedJSON',
    'PreconditionFailed',
    'QueryParameterUnsupported',
    'QueryNotSupported',
    'OperationNotAllowed',
    'NoValidSession',
    'AccessDenied',
    'ResourceAlreadyExists',
    'Success',
    'GeneralError',
    'Created',
  ]) {
    assert.ok(id in baseMessages, id);
  }
});

test('a message substitutes its arguments and carries id, severities, resolution and related properties', async () => {
  const message = redfishMessage('PropertyValueTypeError', ['abc', 'Enabled'], ['#/Enabled']);
  assert.deepEqual(message, {
    MessageId: 'Base.1.22.1.PropertyValueTypeError',
    Message: "The value 'abc' for the property Enabled is not a type that the property can accept.",
    MessageArgs: ['abc', 'Enabled'],
    MessageSeverity: 'Warning',
    Severity: 'Warning',
    Resolution: baseMessages.PropertyValueTypeError.resolution,
    RelatedProperties: ['#/Enabled'],
  });
  await assertValidRedfish(errorBody([message]));
});

test('an error body leads with its only message, or with GeneralError when there are several', async () => {
  const one = errorBody([redfishMessage('ResourceNotFound', ['Session', 'x'])]);
  assert.equal(one.error.code, 'Base.1.22.1.ResourceNotFound');
  assert.equal(one.error.message, "The requested resource of type Session named 'x' was not found.");
  const two = errorBody([redfishMessage('PropertyUnknown', ['A']), redfishMessage('PropertyUnknown', ['B'])]);
  assert.equal(two.error.code, 'Base.1.22.1.GeneralError');
  assert.equal(two.error['@Message.ExtendedInfo'].length, 2);
  await assertValidRedfish(one);
  await assertValidRedfish(two);
});

test('a RedfishError factory carries status, messages and headers', () => {
  const error = errors.noValidSession({ 'WWW-Authenticate': 'Basic' });
  assert.equal(error.statusCode, 401);
  assert.equal(error.messages[0]?.MessageId, 'Base.1.22.1.NoValidSession');
  assert.deepEqual(error.headers, { 'WWW-Authenticate': 'Basic' });
});
