import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';
import { runSushy } from './field-clients.ts';

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

/**
 * OpenStack sushy 4.3.3 (Debian python3-sushy), the library Ironic drives BMCs with, unmodified: it picks
 * the first free CD member as Ironic does, inserts with `insert_media` and ejects with `eject_media`
 * (a POST with no body). Run with Debian's /usr/bin/python3; the admin password goes on stdin.
 */
describe('sushy (Ironic) inserts and ejects from both VirtualMedia collections', () => {
  const image = randomBytes(1024 * 1024 + 2048);
  let stack: VmStack;
  let imageUrl: string;

  before(async () => {
    stack = await startVmStack({ images: { '/ironic/boot.iso': image } });
    imageUrl = `${stack.images.origin}/ironic/boot.iso`;
  });

  after(async () => {
    await stack?.stop();
  });

  const sushy = (collection: 'manager' | 'system', operation: 'insert' | 'eject') =>
    runSushy(stack.server.url, [collection, operation, imageUrl]);

  const exportSha = async (slotId: string) => {
    const copy = path.join(stack.dir, `sushy-${slotId}.img`);
    await new Promise<void>((resolve, reject) =>
      execFile(
        'nbdcopy',
        [`nbd+unix:///?socket=${path.join(stack.harness.hostDir, `${slotId}.sock`)}`, copy],
        (e) => (e ? reject(e) : resolve()),
      ),
    );
    return sha256(await fs.readFile(copy));
  };

  for (const [collection, uri] of [
    ['manager', '/redfish/v1/Managers/bmc/VirtualMedia'],
    ['system', '/redfish/v1/Systems/system/VirtualMedia'],
  ] as const) {
    test(`from the ${collection} collection: a Legacy slot is chosen, byte-exact, then ejected`, async () => {
      const inserted = await sushy(collection, 'insert');
      assert.equal(inserted.path, `${uri}/Slot_2`, 'the first free member takes a URL');
      assert.equal(inserted.inserted, true);
      assert.equal(inserted.image, imageUrl);
      assert.equal(inserted.verify_certificate, true);
      assert.equal(await exportSha('Slot_2'), sha256(image));

      const ejected = await sushy(collection, 'eject');
      assert.equal(ejected.path, `${uri}/Slot_2`);
      assert.equal(ejected.inserted, false);
      assert.equal(ejected.image, null);
      assert.equal(stack.client.slot('Slot_2')?.active, false);
      await assert.rejects(fs.access(path.join(stack.harness.hostDir, 'Slot_2.sock')));
    });
  }
});
