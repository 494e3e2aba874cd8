import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { RequestOptions } from '../helpers/server.ts';
import { followTask, startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';

const run = promisify(execFile);
const collectionUri = '/redfish/v1/Managers/bmc/VirtualMedia';
const slotUri = `${collectionUri}/Slot_2`;
const insertUri = `${slotUri}/Actions/VirtualMedia.InsertMedia`;
const ejectUri = `${slotUri}/Actions/VirtualMedia.EjectMedia`;
const imageCredentials = { user: 'images', password: 'S3cret-image-päss' };
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

describe('Redfish InsertMedia/EjectMedia with the real service (emulated host)', () => {
  const image = randomBytes(3 * 1024 * 1024 + 512);
  let stack: VmStack;
  let imageUrl: string;
  const request = (method: string, uri: string, options?: RequestOptions) =>
    stack.request(method, uri, options);

  before(async () => {
    stack = await startVmStack({ images: { '/images/disk.img': image }, imageCredentials });
    imageUrl = `${stack.images.origin}/images/disk.img`;
  });

  after(async () => {
    await stack?.stop();
  });

  test('the collection lists every slot, inserted or not', async () => {
    const response = await request('GET', collectionUri);
    assert.equal(response.status, 200);
    assert.deepEqual(
      response.json.Members.map((m: { '@odata.id': string }) => m['@odata.id']),
      ['Slot_0', 'Slot_1', 'Slot_2', 'Slot_3'].map((id) => `${collectionUri}/${id}`),
    );
    assert.equal(response.json['Members@odata.count'], 4);
  });

  test('an empty Legacy slot: nulls where nothing is inserted, both actions, an ETag', async () => {
    const response = await request('GET', slotUri);
    assert.equal(response.status, 200);
    assert.match(String(response.headers.etag), /^W\/".+"$/);
    const body = response.json;
    assert.equal(body.Id, 'Slot_2');
    assert.equal(body.Inserted, false);
    assert.equal(body.ConnectedVia, 'NotConnected');
    assert.equal(body.Image, null);
    assert.equal(body.ImageName, null);
    assert.equal(body.TransferProtocolType, null);
    assert.equal(body.Password, null);
    assert.deepEqual(body.MediaTypes, ['CD', 'USBStick']);
    assert.deepEqual(Object.keys(body.Actions).sort(), [
      '#VirtualMedia.EjectMedia',
      '#VirtualMedia.InsertMedia',
    ]);
    assert.equal(body.Oem, undefined);
  });

  test('a Proxy slot: OEM protocol, the OpenBMC WebSocketEndpoint, only EjectMedia', async () => {
    const { status, json: body } = await request('GET', `${collectionUri}/Slot_0`);
    assert.equal(status, 200);
    assert.equal(body.TransferProtocolType, 'OEM');
    assert.deepEqual(body.Oem, {
      OpenBMC: { '@odata.type': '#OpenBMCVirtualMedia.v1_0_0.VirtualMedia', WebSocketEndpoint: '/nbd/0' },
    });
    assert.deepEqual(Object.keys(body.Actions), ['#VirtualMedia.EjectMedia']);
  });

  test('InsertMedia from HTTPS: 202 with a task monitor, the task completes, the member shows the image', async () => {
    const accepted = await request('POST', insertUri, {
      body: { Image: imageUrl, UserName: imageCredentials.user, Password: imageCredentials.password },
    });
    assert.equal(accepted.status, 202, accepted.text);
    const monitor = String(accepted.headers.location);
    assert.match(monitor, /^\/redfish\/v1\/TaskService\/TaskMonitors\/\d+$/);
    assert.equal(accepted.json.TaskMonitor, monitor);

    const final = await followTask(stack, monitor);
    assert.equal(final.status, 204, final.text);

    const task = await request('GET', accepted.json['@odata.id']);
    assert.equal(task.json.TaskState, 'Completed');
    assert.equal(task.json.TaskStatus, 'OK');
    assert.equal(task.json.PercentComplete, 100);
    assert.equal(task.json.Messages[0].MessageId, 'Base.1.22.1.Success');
    assert.ok(Date.parse(task.json.EndTime) >= Date.parse(task.json.StartTime));
    assert.equal(task.json.Payload.TargetUri, insertUri);
    assert.equal(task.json.Payload.JsonBody, undefined);

    const { json: body } = await request('GET', slotUri);
    assert.equal(body.Inserted, true);
    assert.equal(body.ConnectedVia, 'URI');
    assert.equal(body.TransferProtocolType, 'HTTPS');
    assert.equal(body.Image, imageUrl);
    assert.equal(body.ImageName, 'disk.img');
    assert.equal(body.WriteProtected, true);
    assert.equal(body.Password, null);
  });

  test("the emulated host's export carries exactly the image's bytes", async () => {
    const copy = path.join(stack.dir, 'copy.img');
    const socket = path.join(stack.harness.hostDir, 'Slot_2.sock');
    await run('nbdcopy', [`nbd+unix:///?socket=${socket}`, copy]);
    assert.equal(sha256(await fs.readFile(copy)), sha256(image));
  });

  test('a second InsertMedia is 409 ResourceInUse', async () => {
    const response = await request('POST', insertUri, { body: { Image: imageUrl } });
    assert.equal(response.status, 409);
    assert.equal(response.json.error['@Message.ExtendedInfo'][0].MessageId, 'Base.1.22.1.ResourceInUse');
  });

  test('EjectMedia empties the slot and leaves no socket or process behind', async () => {
    const response = await request('POST', ejectUri, { body: {} });
    assert.equal(response.status, 204, response.text);
    const { json: body } = await request('GET', slotUri);
    assert.equal(body.Inserted, false);
    assert.equal(body.Image, null);
    assert.equal(body.ImageName, null);
    assert.equal(body.ConnectedVia, 'NotConnected');
    await assert.rejects(fs.access(path.join(stack.harness.hostDir, 'Slot_2.sock')));
    assert.deepEqual(await stack.harness.servicePids(), []);
  });

  test('EjectMedia on an empty slot is a no-op success, with `{}`, an empty JSON body or no body', async () => {
    assert.equal((await request('POST', ejectUri, { body: {} })).status, 204);
    const empty = await request('POST', ejectUri, {
      rawBody: '',
      headers: { 'Content-Type': 'application/json' },
    });
    assert.equal(empty.status, 204, empty.text);
    const none = await request('POST', ejectUri);
    assert.equal(none.status, 204, none.text);
    const parameter = await request('POST', ejectUri, { body: { Image: 'x' } });
    assert.equal(parameter.status, 400);
    assert.equal(
      parameter.json.error['@Message.ExtendedInfo'][0].MessageId,
      'Base.1.22.1.ActionParameterUnknown',
    );
  });

  test('no response ever carried the image password', () => {
    assert.ok(stack.responses.length > 5);
    for (const response of stack.responses) assert.ok(!response.text.includes(imageCredentials.password));
  });
});
