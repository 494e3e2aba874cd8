import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { assertValidRedfish } from '../helpers/redfish-schema.ts';
import { startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';
import { redfishtool as redfishToolFor } from './field-clients.ts';

const run = promisify(execFile);
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const slotUri = '/redfish/v1/Managers/bmc/VirtualMedia/Slot_2';

/** DMTF redfishtool 1.1.5 (Debian package) as a real client; it follows a 202's task monitor by itself. */
describe('redfishtool drives insert and eject', () => {
  const image = randomBytes(256 * 1024);
  let stack: VmStack;
  let redfishtool: (...args: string[]) => Promise<string>;

  before(async () => {
    let slowRequests = 0;
    stack = await startVmStack({
      images: { '/tool.img': image, '/slow.img': image },
      // The first request for slow.img outlasts the server's 5 s answer bound: a task to follow.
      imageDelayMs: (request) => (request.path === '/slow.img' && slowRequests++ === 0 ? 6500 : 0),
    });
    redfishtool = redfishToolFor(stack.server.url);
  });

  after(async () => {
    await stack?.stop();
  });

  const member = async () => {
    const body = JSON.parse(await redfishtool('raw', 'GET', slotUri));
    await assertValidRedfish(body);
    return body;
  };

  test('raw GET reads an empty slot', async () => {
    const body = await member();
    assert.equal(body.Inserted, false);
    assert.equal(body.Image, null);
  });

  test('raw POST InsertMedia of a quick mount: 204 at once, the host reads the image', async () => {
    const output = await redfishtool(
      '-ssss',
      'raw',
      'POST',
      `${slotUri}/Actions/VirtualMedia.InsertMedia`,
      '-d',
      JSON.stringify({ Image: `${stack.images.origin}/tool.img`, WriteProtected: true }),
    );
    assert.match(output, /status_code: 204/);
    assert.doesNotMatch(output, /status_code: 202/);
    const body = await member();
    assert.equal(body.Inserted, true);
    assert.equal(body.ConnectedVia, 'URI');
    assert.equal(body.Image, `${stack.images.origin}/tool.img`);
    const copy = path.join(stack.dir, 'redfishtool-copy.img');
    await run('nbdcopy', [`nbd+unix:///?socket=${path.join(stack.harness.hostDir, 'Slot_2.sock')}`, copy]);
    assert.equal(sha256(await fs.readFile(copy)), sha256(image));
  });

  test('raw POST InsertMedia of a slow mount: 202, redfishtool follows the monitor to 204', async () => {
    const slowSlot = slotUri.replace('Slot_2', 'Slot_3');
    // -ssss prints the status of every response: the 202 and then the monitor's answers.
    const output = await redfishtool(
      '-ssss',
      'raw',
      'POST',
      `${slowSlot}/Actions/VirtualMedia.InsertMedia`,
      '-d',
      JSON.stringify({ Image: `${stack.images.origin}/slow.img`, WriteProtected: true }),
    );
    assert.match(output, /status_code: 202/);
    assert.match(
      output,
      /status_code: 204\s+\S+ Last Response: r\.url: https:\/\/\S+\/TaskService\/TaskMonitors\/\d+/,
    );
    assert.equal(JSON.parse(await redfishtool('raw', 'GET', slowSlot)).Inserted, true);
    await redfishtool('raw', 'POST', `${slowSlot}/Actions/VirtualMedia.EjectMedia`, '-d', '{}');
    assert.equal(JSON.parse(await redfishtool('raw', 'GET', slowSlot)).Inserted, false);
  });

  test('raw POST EjectMedia empties the slot', async () => {
    const output = await redfishtool(
      '-ssss',
      'raw',
      'POST',
      `${slotUri}/Actions/VirtualMedia.EjectMedia`,
      '-d',
      '{}',
    );
    assert.match(output, /status_code: 204/);
    const body = await member();
    assert.equal(body.Inserted, false);
    assert.equal(body.Image, null);
  });
});
