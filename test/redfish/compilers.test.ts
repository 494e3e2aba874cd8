import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  lazyValidators,
  redfishSchemas,
  schemaRef,
  sharedSerializers,
  validationOptions,
} from '../../src/redfish/schemas.ts';

const external = Object.fromEntries(redfishSchemas.map((schema) => [schema.$id, schema]));
const compile = (schema: object, httpStatus = '200') =>
  sharedSerializers(external, {})({ schema, method: 'GET', url: '/x', httpStatus });

test('one serializer per schema object, whichever route and status asks for it', () => {
  const builder = sharedSerializers(external, {});
  const ask = (schema: object, url: string, httpStatus: string) =>
    builder({ schema, method: 'GET', url, httpStatus });
  const collection = ask(schemaRef('Collection.json'), '/a', '200');
  assert.equal(ask(schemaRef('Collection.json'), '/b', '200'), collection);
  assert.equal(ask(schemaRef('Collection.json'), '/a', '201'), collection);
  assert.notEqual(ask(schemaRef('Session.json'), '/a', '200'), collection);
  // An equal but distinct inline schema is its own entry: identity, not structure, is the key.
  const inline = { type: 'object', properties: { a: { type: 'string' } } };
  assert.notEqual(ask({ ...inline }, '/c', '200'), ask({ ...inline }, '/c', '200'));
});

test('the shared serializer serializes by the schema: declared properties only', () => {
  const serialize = compile(schemaRef('Collection.json'));
  const body = {
    '@odata.id': '/redfish/v1/Managers/bmc/VirtualMedia',
    '@odata.type': '#VirtualMediaCollection.VirtualMediaCollection',
    Name: 'Virtual Media Services',
    Members: [{ '@odata.id': '/redfish/v1/Managers/bmc/VirtualMedia/Slot_0' }],
    'Members@odata.count': 1,
    Undeclared: 'dropped',
  };
  const { Undeclared: _dropped, ...declared } = body;
  assert.deepEqual(JSON.parse(serialize(body)), declared);
});

test('a route schema with the $id of a registered one is compiled on its own, as fastify does', () => {
  const own = { $id: 'Collection.json', type: 'object', properties: { Name: { type: 'string' } } };
  assert.equal(compile(own)({ Name: 'n', Members: [] }), '{"Name":"n"}');
});

test('serializers and validators compile on first use, not when fastify asks for them at startup', () => {
  // A schema no compiler accepts: asking for it must not throw, using it must.
  const broken = { type: 'object', properties: { a: { $ref: 'Nowhere.json#' } } };
  const serialize = compile(broken);
  assert.throws(() => serialize({ a: 1 }), /Nowhere\.json/);
  const validators = lazyValidators(external, validationOptions);
  const validate = validators({ schema: broken, method: 'POST', url: '/x', httpPart: 'body' });
  assert.throws(() => validate({ a: 1 }), /Nowhere\.json/);
});

test('a lazy validator validates with the server options and hands fastify the reasons', () => {
  const validators = lazyValidators(external, validationOptions);
  const validate = validators({
    schema: schemaRef('requests/SessionCreate.json'),
    method: 'POST',
    url: '/s',
    httpPart: 'body',
  });
  assert.equal(validate({ UserName: 'admin', Password: 'p' }), true);
  assert.equal((validate as unknown as { errors: unknown }).errors, null);
  assert.equal(validate({ UserName: 7 }), false);
  const errors = (validate as unknown as { errors: { instancePath: string; keyword: string }[] }).errors;
  // The server's options: both the wrong type (not coerced to a string) and the missing Password.
  assert.deepEqual(errors.map(({ keyword }) => keyword).sort(), ['required', 'type']);
});
