import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { Interface, SlotMode, slotPath } from '../../src/contract/dbus.ts';
import { listenUnix, type Nbdkit, relayTo, startNbdkit, type UnixListener } from '../helpers/nbdkit.ts';
import { proxySlotConfig, type ServiceHarness, startServiceHarness } from '../helpers/service-harness.ts';

const run = promisify(execFile);
const IDLE = slotPath(SlotMode.Proxy, 'Slot_0');
const BUSY = slotPath(SlotMode.Proxy, 'Slot_1');
const INACTIVITY_TIMEOUT = 2;

describe('inactivity timeout', () => {
  let dir: string;
  let harness: ServiceHarness;
  let nbdkit: Nbdkit;
  const listeners: UnixListener[] = [];

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-inactivity-'));
    nbdkit = await startNbdkit(dir, 'memory', ['memory', 'size=64K']);
    harness = await startServiceHarness({
      config: (runtimeDir) => ({
        InactivityTimeout: INACTIVITY_TIMEOUT,
        MountPoints: { Slot_0: proxySlotConfig(runtimeDir, 0), Slot_1: proxySlotConfig(runtimeDir, 1) },
      }),
    });
    for (const n of [0, 1]) {
      listeners.push(await listenUnix(path.join(harness.runtimeDir, `nbd${n}.sock`), relayTo(nbdkit.socket)));
    }
  });
  after(async () => {
    await harness?.stop();
    for (const listener of listeners) await listener.close();
    await nbdkit?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('an idle slot counts down and unmounts itself; one with I/O stays mounted', async () => {
    const since = harness.signals.length;
    for (const slot of [IDLE, BUSY]) {
      assert.deepEqual(await harness.call(slot, Interface.Proxy, 'Mount'), [true]);
      assert.equal(await harness.completion(slot, since), 0);
    }
    assert.equal(
      (await harness.getAll(BUSY, Interface.MountPoint)).RemainingInactivityTimeout,
      INACTIVITY_TIMEOUT,
    );
    const mounted = harness.signals.length;

    // Keep reading from the busy slot's host export until well past the idle slot's unmount.
    const busyUri = `nbd+unix:///?socket=${path.join(harness.hostDir, 'Slot_1.sock')}`;
    let idleGone = false;
    const reader = (async () => {
      let copies = 0;
      while (!idleGone || copies < 10) {
        await run('nbdcopy', [busyUri, path.join(dir, 'copy.img')]);
        copies++;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    })();
    assert.equal(await harness.completion(IDLE, mounted), 0, 'the idle slot unmounted itself');
    idleGone = true;
    await reader;
    assert.equal((await harness.getAll(IDLE, Interface.Process)).Active, false);
    assert.equal((await harness.getAll(IDLE, Interface.MountPoint)).RemainingInactivityTimeout, 0);

    const countdown = harness.signals
      .slice(since)
      .filter(
        (s) =>
          s.path === IDLE &&
          s.member === 'PropertiesChanged' &&
          s.body[0] === Interface.MountPoint &&
          'RemainingInactivityTimeout' in s.body[1],
      )
      .map((s) => s.body[1].RemainingInactivityTimeout.value);
    assert.deepEqual(countdown, [2, 1, 0], 'RemainingInactivityTimeout counted down, announced each second');

    assert.equal(
      (await harness.getAll(BUSY, Interface.Process)).Active,
      true,
      'the busy slot is still mounted',
    );
    assert.ok(((await harness.getAll(BUSY, Interface.Stats)).ReadIO as bigint) > 0n);
    const busyCompletions = harness.signals
      .slice(since)
      .filter((s) => s.path === BUSY && s.member === 'Completion');
    assert.equal(busyCompletions.length, 1, 'only its mount completion');
    const unmountFrom = harness.signals.length;
    assert.deepEqual(await harness.call(BUSY, Interface.Proxy, 'Unmount'), [true]);
    assert.equal(await harness.completion(BUSY, unmountFrom), 0);
  });
});
