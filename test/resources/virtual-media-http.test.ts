import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { type Nginx, startNginx } from '../helpers/nginx.ts';
import { assertValidRedfish } from '../helpers/redfish-schema.ts';
import { messageIds, startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';

const run = promisify(execFile);
const slotUri = '/redfish/v1/Systems/system/VirtualMedia/Slot_2';
const insertUri = `${slotUri}/Actions/VirtualMedia.InsertMedia`;
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

/**
 * Plain http:// images, which Ironic and Metal3 serve by default: refused unless the integrator sets
 * VMEDIA_ALLOW_HTTP for both daemons, and then fetched from a real web server (Debian nginx).
 */
describe('http:// images with the integrator setting (VMEDIA_ALLOW_HTTP)', () => {
  const image = randomBytes(2 * 1024 * 1024 + 4096);
  let nginx: Nginx;
  let allowing: VmStack;

  before(async () => {
    nginx = await startNginx({ '/images/ipa.img': image });
    allowing = await startVmStack({ images: {}, allowHttp: true });
  });

  after(async () => {
    await allowing?.stop();
    await nginx?.stop();
  });

  test('InsertMedia and its ActionInfo list HTTP among the allowable protocols', async () => {
    const member = await allowing.request('GET', slotUri);
    assertValidRedfish(member.json);
    assert.deepEqual(
      member.json.Actions['#VirtualMedia.InsertMedia']['TransferProtocolType@Redfish.AllowableValues'],
      ['HTTPS', 'CIFS', 'HTTP'],
    );
    // The default for an empty slot stays the encrypted one.
    assert.equal(member.json.TransferProtocolType, 'HTTPS');
    const info = await allowing.request('GET', `${slotUri}/InsertMediaActionInfo`);
    const parameter = info.json.Parameters.find((p: { Name: string }) => p.Name === 'TransferProtocolType');
    assert.deepEqual(parameter.AllowableValues, ['HTTPS', 'CIFS', 'HTTP']);
  });

  test('an http:// image from nginx mounts: 204, TransferProtocolType HTTP, byte-exact on the host', async () => {
    const url = `${nginx.origin}/images/ipa.img`;
    const response = await allowing.request('POST', insertUri, { body: { Image: url } });
    assert.equal(response.status, 204, response.text);
    const member = await allowing.request('GET', slotUri);
    assert.equal(member.json.Inserted, true);
    assert.equal(member.json.Image, url);
    assert.equal(member.json.TransferProtocolType, 'HTTP');
    const copy = path.join(allowing.dir, 'http-copy.img');
    await run('nbdcopy', [`nbd+unix:///?socket=${path.join(allowing.harness.hostDir, 'Slot_2.sock')}`, copy]);
    assert.equal(sha256(await fs.readFile(copy)), sha256(image));
    const ejected = await allowing.request('POST', `${slotUri}/Actions/VirtualMedia.EjectMedia`);
    assert.equal(ejected.status, 204);
    assert.equal((await allowing.request('GET', slotUri)).json.Inserted, false);
  });

  test('without the setting, the same URL is refused saying which schemes are supported', async () => {
    const strict = await startVmStack({ images: {} });
    try {
      const member = await strict.request('GET', slotUri);
      assert.deepEqual(
        member.json.Actions['#VirtualMedia.InsertMedia']['TransferProtocolType@Redfish.AllowableValues'],
        ['HTTPS', 'CIFS'],
      );
      const response = await strict.request('POST', insertUri, {
        body: { Image: `${nginx.origin}/images/ipa.img` },
      });
      assert.equal(response.status, 400);
      assert.deepEqual(messageIds(response), ['ResourceAtUriInUnknownFormat']);
      assert.match(
        response.json.error['@Message.ExtendedInfo'][0].Resolution,
        /^Images from http:\/\/ URLs are refused: only https:\/\/ and smb:\/\/ are supported\.$/,
      );
      // The service refuses it on its own too, for a caller that skips the server.
      const [code] = await strict.client.legacyMount('Slot_2', `${nginx.origin}/images/ipa.img`, false).then(
        () => ['accepted'],
        (error: { dbusName?: string }) => [error.dbusName],
      );
      assert.equal(code, 'xyz.openbmc_project.Common.Error.InvalidArgument');
    } finally {
      await strict.stop();
    }
  });
});
