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
const systemCollectionUri = '/redfish/v1/Systems/system/VirtualMedia';
const slotUri = `${collectionUri}/Slot_2`;
const insertUri = `${slotUri}/Actions/VirtualMedia.InsertMedia`;
const ejectUri = `${slotUri}/Actions/VirtualMedia.EjectMedia`;
const imageCredentials = { user: 'images', password: 'S3cret-image-päss' };
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

describe('Redfish InsertMedia/EjectMedia with the real service (emulated host)', () => {
  const image = randomBytes(3 * 1024 * 1024 + 512);
  let stack: VmStack;
  let imageUrl: string;
  let slowImageUrl: string;
  const request = (method: string, uri: string, options?: RequestOptions) =>
    stack.request(method, uri, options);

  before(async () => {
    let slowRequests = 0;
    stack = await startVmStack({
      images: { '/images/disk.img': image, '/images/slow.img': image },
      imageCredentials,
      // The first request for slow.img waits longer than the server's answer bound (5 s).
      imageDelayMs: (request) => (request.path === '/images/slow.img' && slowRequests++ === 0 ? 6500 : 0),
    });
    imageUrl = `${stack.images.origin}/images/disk.img`;
    slowImageUrl = `${stack.images.origin}/images/slow.img`;
  });

  after(async () => {
    await stack?.stop();
  });

  test('both collections list every slot, inserted or not, Legacy slots first', async () => {
    for (const uri of [collectionUri, systemCollectionUri]) {
      const response = await request('GET', uri);
      assert.equal(response.status, 200);
      // Clients (Ansible, Tacklebox, Ironic) take the first empty member: it must take a URL.
      assert.deepEqual(
        response.json.Members.map((m: { '@odata.id': string }) => m['@odata.id']),
        ['Slot_2', 'Slot_3', 'Slot_0', 'Slot_1'].map((id) => `${uri}/${id}`),
      );
      assert.equal(response.json['Members@odata.count'], 4);
    }
    const system = await request('GET', '/redfish/v1/Systems/system');
    assert.deepEqual(system.json.VirtualMedia, { '@odata.id': systemCollectionUri });
  });

  test('a member under Systems is the same slot, with its URIs and actions under Systems', async () => {
    const { status, json: body } = await request('GET', `${systemCollectionUri}/Slot_2`);
    assert.equal(status, 200);
    const managerBody = (await request('GET', slotUri)).json;
    const underSystems = JSON.parse(
      JSON.stringify(managerBody).replaceAll(collectionUri, systemCollectionUri),
    );
    assert.deepEqual(body, underSystems);
    assert.equal(
      body.Actions['#VirtualMedia.InsertMedia'].target,
      `${systemCollectionUri}/Slot_2/Actions/VirtualMedia.InsertMedia`,
    );
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
    assert.equal(body.UserName, null);
    assert.equal(body.Password, null);
    // Not null: clients read that as "takes no URL". The default protocol, and the action lists all.
    assert.equal(body.TransferProtocolType, 'HTTPS');
    assert.equal(body.TransferMethod, 'Stream');
    assert.deepEqual(body.MediaTypes, ['CD', 'USBStick']);
    assert.deepEqual(Object.keys(body.Actions).sort(), [
      '#VirtualMedia.EjectMedia',
      '#VirtualMedia.InsertMedia',
    ]);
    assert.deepEqual(body.Actions['#VirtualMedia.InsertMedia'], {
      target: insertUri,
      '@Redfish.ActionInfo': `${slotUri}/InsertMediaActionInfo`,
      'TransferMethod@Redfish.AllowableValues': ['Stream'],
      'TransferProtocolType@Redfish.AllowableValues': ['HTTPS', 'CIFS'],
    });
    assert.equal(body.Oem, undefined);
  });

  test("InsertMedia's ActionInfo lists its parameters and the values they may take", async () => {
    const { status, json: body } = await request('GET', `${slotUri}/InsertMediaActionInfo`);
    assert.equal(status, 200);
    assert.equal(body['@odata.type'], '#ActionInfo.v1_5_0.ActionInfo');
    const parameter = (name: string) => body.Parameters.find((p: { Name: string }) => p.Name === name);
    assert.deepEqual(parameter('Image'), { Name: 'Image', Required: true, DataType: 'String' });
    assert.deepEqual(parameter('TransferProtocolType').AllowableValues, ['HTTPS', 'CIFS']);
    assert.deepEqual(parameter('TransferMethod').AllowableValues, ['Stream']);
    assert.deepEqual(body.Parameters.map((p: { Name: string }) => p.Name).sort(), [
      'Image',
      'Inserted',
      'Password',
      'TransferMethod',
      'TransferProtocolType',
      'UserName',
      'WriteProtected',
    ]);
    const proxy = await request('GET', `${collectionUri}/Slot_0/InsertMediaActionInfo`);
    assert.equal(proxy.status, 404);
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

  test('InsertMedia from HTTPS that mounts at once: 204, and the member already shows the image', async () => {
    const response = await request('POST', insertUri, {
      body: { Image: imageUrl, UserName: imageCredentials.user, Password: imageCredentials.password },
    });
    assert.equal(response.status, 204, response.text);
    const { json: body } = await request('GET', slotUri);
    assert.equal(body.Inserted, true);
    assert.equal(body.UserName, imageCredentials.user);
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

  test('a mount slower than the answer bound: 202 with a task monitor, and the task completes', async () => {
    const started = Date.now();
    const accepted = await request('POST', `${collectionUri}/Slot_3/Actions/VirtualMedia.InsertMedia`, {
      body: { Image: slowImageUrl, UserName: imageCredentials.user, Password: imageCredentials.password },
    });
    assert.equal(accepted.status, 202, accepted.text);
    assert.ok(Date.now() - started >= 4500, 'the server waited for a quick Completion first');
    const monitor = String(accepted.headers.location);
    assert.match(monitor, /^\/redfish\/v1\/TaskService\/TaskMonitors\/\d+$/);
    assert.equal(accepted.json.TaskMonitor, monitor);
    const running = await request('GET', monitor);
    assert.equal(running.status, 202);

    const final = await followTask(stack, monitor);
    assert.equal(final.status, 204, final.text);
    const task = await request('GET', accepted.json['@odata.id']);
    assert.equal(task.json.TaskState, 'Completed');
    assert.equal(task.json.TaskStatus, 'OK');
    assert.equal(task.json.PercentComplete, 100);
    assert.equal(task.json.Messages[0].MessageId, 'Base.1.22.1.Success');
    assert.ok(Date.parse(task.json.EndTime) >= Date.parse(task.json.StartTime));
    assert.equal(task.json.Payload.TargetUri, `${collectionUri}/Slot_3/Actions/VirtualMedia.InsertMedia`);
    assert.equal(task.json.Payload.JsonBody, undefined);
    assert.equal((await request('GET', `${collectionUri}/Slot_3`)).json.Inserted, true);
    assert.equal(
      (await request('POST', `${collectionUri}/Slot_3/Actions/VirtualMedia.EjectMedia`)).status,
      204,
    );
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
    // What sushy and webui-vue send: a JSON Content-Type and no body at all.
    const typedNone = await request('POST', ejectUri, { headers: { 'Content-Type': 'application/json' } });
    assert.equal(typedNone.status, 204, typedNone.text);
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
