import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { assertValidRedfish } from '../helpers/redfish-schema.ts';
import { adminPassword } from '../helpers/server.ts';
import { startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';

const run = promisify(execFile);
const slotUri = '/redfish/v1/Managers/bmc/VirtualMedia/Slot_2';

/** DMTF redfishtool (Debian package) as a real client; it follows a 202's task monitor by itself. */
describe('redfishtool drives insert and eject', () => {
  let stack: VmStack;
  let redfishtool: (...args: string[]) => Promise<string>;

  before(async () => {
    stack = await startVmStack({ images: { '/tool.img': Buffer.alloc(256 * 1024, 7) } });
    const host = new URL(stack.server.url).host;
    redfishtool = async (...args) => {
      const { stdout, stderr } = await run('redfishtool', [
        '-r',
        host,
        '-u',
        'admin',
        '-p',
        adminPassword,
        '-S',
        'Always',
        ...args,
      ]);
      return stdout + stderr;
    };
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

  test('raw POST InsertMedia: 202, redfishtool follows the monitor to 204, the slot is inserted', async () => {
    const image = `${stack.images.origin}/tool.img`;
    // -ssss prints the status of every response: the 202 and then the monitor's answers.
    const output = await redfishtool(
      '-ssss',
      'raw',
      'POST',
      `${slotUri}/Actions/VirtualMedia.InsertMedia`,
      '-d',
      JSON.stringify({ Image: image, WriteProtected: true }),
    );
    assert.match(output, /status_code: 202/);
    assert.match(
      output,
      /status_code: 204\s+\S+ Last Response: r\.url: https:\/\/\S+\/TaskService\/TaskMonitors\/\d+/,
    );
    const body = await member();
    assert.equal(body.Inserted, true);
    assert.equal(body.ConnectedVia, 'URI');
    assert.equal(body.Image, image);
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
