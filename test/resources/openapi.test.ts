import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { openapiFile, renderOpenapi } from '../../scripts/generate-openapi.ts';

test('openapi/openapi.yaml is what `npm run openapi` generates from the current routes', async () => {
  const committed = await readFile(openapiFile, 'utf8');
  assert.equal(committed, await renderOpenapi(), 'openapi/openapi.yaml is stale: run `npm run openapi`');
});

test('the document describes the Redfish session and account routes with their body schemas', async () => {
  const document = await readFile(openapiFile, 'utf8');
  for (const path of [
    '/redfish/v1/SessionService/Sessions:',
    '/redfish/v1/AccountService/Accounts/{id}:',
    '/login:',
  ]) {
    assert.ok(document.includes(path), path);
  }
  assert.match(document, /UserName:/);
});
