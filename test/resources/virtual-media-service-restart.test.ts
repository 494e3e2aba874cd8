import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Response } from '../helpers/server.ts';
import { outcomeOf, startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';
import { waitFor } from '../helpers/wait.ts';

const collectionUri = '/redfish/v1/Managers/bmc/VirtualMedia';
const slotUri = `${collectionUri}/Slot_2`;

/** Polls the collection until it answers `status`. */
const collectionAnswers = (stack: VmStack, status: number) => async () =>
  (await stack.server.request('GET', collectionUri)).status === status;
const restartWait = { timeoutMs: 30_000, intervalMs: 100 };

function assertUnavailable(response: Response) {
  assert.equal(response.status, 503, response.text);
  assert.equal(response.headers['retry-after'], '5');
  assert.equal(
    response.json.error['@Message.ExtendedInfo'][0].MessageId,
    'Base.1.22.1.ServiceTemporarilyUnavailable',
  );
}

describe('the VirtualMedia service killed and restarted', () => {
  let stack: VmStack;

  before(async () => {
    stack = await startVmStack({ images: { '/r.img': Buffer.alloc(128 * 1024, 3) } });
  });

  after(async () => {
    await stack?.stop();
  });

  test('while it is gone every VirtualMedia request is 503 with Retry-After, never 500 or an empty 200', async () => {
    assert.equal((await stack.server.request('GET', slotUri)).status, 200);
    await stack.killService();
    await waitFor(collectionAnswers(stack, 503), { what: 'the collection to answer 503', ...restartWait });
    assertUnavailable(await stack.server.request('GET', collectionUri));
    assertUnavailable(await stack.server.request('GET', slotUri));
    assertUnavailable(
      await stack.server.request('POST', `${slotUri}/Actions/VirtualMedia.InsertMedia`, {
        body: { Image: `${stack.images.origin}/r.img` },
      }),
    );
    assertUnavailable(
      await stack.server.request('POST', `${slotUri}/Actions/VirtualMedia.EjectMedia`, { body: {} }),
    );
    // The rest of the service is unaffected.
    assert.equal((await stack.server.request('GET', '/redfish/v1/Managers/bmc')).status, 200);
  });

  test('a new service instance is picked up by itself and works', async () => {
    await stack.restartService();
    await waitFor(collectionAnswers(stack, 200), {
      what: 'the collection to answer 200 again',
      ...restartWait,
    });
    const accepted = await stack.server.request('POST', `${slotUri}/Actions/VirtualMedia.InsertMedia`, {
      body: { Image: `${stack.images.origin}/r.img` },
    });
    assert.equal((await outcomeOf(stack, accepted)).status, 204, accepted.text);
    assert.equal((await stack.server.request('GET', slotUri)).json.Inserted, true);
    const ejected = await stack.server.request('POST', `${slotUri}/Actions/VirtualMedia.EjectMedia`, {
      body: {},
    });
    assert.equal(ejected.status, 204);
  });
});
