import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { Errno, Interface, SlotMode, slotPath } from '../../src/contract/dbus.ts';
import { listenUnix, type Nbdkit, relayTo, startNbdkit } from '../helpers/nbdkit.ts';
import { type ServiceHarness, startServiceHarness } from '../helpers/service-harness.ts';

const run = promisify(execFile);
const sha = (bytes: Uint8Array) => crypto.createHash('sha256').update(bytes).digest('hex');
const PROXY = slotPath(SlotMode.Proxy, 'Slot_0');

describe('Proxy mount: the test plays the server on the slot socket, relaying to nbdkit', () => {
  let dir: string;
  let harness: ServiceHarness;
  let nbdkit: Nbdkit;
  const image = crypto.randomBytes(2 * 1024 * 1024 + 4096);

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-proxy-'));
    await fs.writeFile(path.join(dir, 'disk.img'), image);
    nbdkit = await startNbdkit(dir, 'source', ['file', path.join(dir, 'disk.img')]);
    harness = await startServiceHarness();
  });
  after(async () => {
    await harness?.stop();
    await nbdkit?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('byte-exact reads and counted writes through the host export; Unmount leaves nothing', async () => {
    const slotSocket = path.join(harness.runtimeDir, 'nbd0.sock');
    const server = await listenUnix(slotSocket, relayTo(nbdkit.socket));
    try {
      const since = harness.signals.length;
      assert.deepEqual(await harness.call(PROXY, Interface.Proxy, 'Mount'), [true]);
      assert.equal(await harness.completion(PROXY, since), 0, harness.output());
      assert.equal(server.connections.length, 1, 'the service connected once to the slot socket');
      assert.deepEqual(await harness.getAll(PROXY, Interface.Process), { Active: true, ExitCode: -1 });
      assert.equal((await harness.getAll(PROXY, Interface.MountPoint)).WriteProtected, false);

      const hostUri = `nbd+unix:///?socket=${path.join(harness.hostDir, 'Slot_0.sock')}`;
      const copy = path.join(dir, 'copy.img');
      await run('nbdcopy', [hostUri, copy]);
      assert.equal(sha(await fs.readFile(copy)), sha(image));

      const patch = crypto.randomBytes(64 * 1024);
      await fs.writeFile(path.join(dir, 'patch.img'), patch);
      await run('nbdcopy', [path.join(dir, 'patch.img'), hostUri]);
      assert.equal(
        sha((await fs.readFile(path.join(dir, 'disk.img'))).subarray(0, patch.length)),
        sha(patch),
      );
      await harness.waitFor(async () => {
        const stats = await harness.getAll(PROXY, Interface.Stats);
        return (stats.ReadIO as bigint) > 0n && (stats.WriteIO as bigint) > 0n;
      }, 'ReadIO and WriteIO to grow');

      const beforeUnmount = harness.signals.length;
      assert.deepEqual(await harness.call(PROXY, Interface.Proxy, 'Unmount'), [true]);
      assert.equal(await harness.completion(PROXY, beforeUnmount), 0);
      assert.deepEqual(await harness.getAll(PROXY, Interface.Process), { Active: false, ExitCode: 0 });
      assert.deepEqual(await fs.readdir(harness.hostDir), []);
      await harness.waitFor(
        () => server.connections[0]!.closed,
        'the service to close its source connection',
      );
    } finally {
      await server.close();
    }
  });

  test('a medium lost on its own: Completion(EIO) and Ready; a later Unmount answers true, Completion(0)', async () => {
    const server = await listenUnix(path.join(harness.runtimeDir, 'nbd0.sock'), relayTo(nbdkit.socket));
    try {
      const since = harness.signals.length;
      assert.deepEqual(await harness.call(PROXY, Interface.Proxy, 'Mount'), [true]);
      assert.equal(await harness.completion(PROXY, since), 0, harness.output());

      const lost = harness.signals.length;
      await server.close(); // the server side goes away (bmcweb's WebSocket peer died)
      assert.equal(await harness.completion(PROXY, lost), Errno.EIO);
      assert.deepEqual(await harness.getAll(PROXY, Interface.Process), {
        Active: false,
        ExitCode: Errno.EIO,
      });
      assert.deepEqual(await fs.readdir(harness.hostDir), [], 'host export removed');

      // What bmcweb's EjectMedia (or the /nbd bridge) does next.
      const ejected = harness.signals.length;
      assert.deepEqual(await harness.call(PROXY, Interface.Proxy, 'Unmount'), [true]);
      assert.equal(await harness.completion(PROXY, ejected), 0);
      assert.equal((await harness.getAll(PROXY, Interface.Process)).Active, false);
    } finally {
      await server.close();
    }
  });
});
