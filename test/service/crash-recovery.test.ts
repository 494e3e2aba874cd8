import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import dbus, { type MessageBus } from 'dbus-next';
import { Interface, SERVICE_NAME, SlotMode, slotPath } from '../../src/contract/dbus.ts';
import { type PrivateBus, startPrivateBus } from '../../src/dbus/private-bus.ts';
import { processAlive } from '../../src/service/child.ts';
import { createFakeKernel, type FakeKernel } from '../helpers/fake-kernel.ts';
import { type ImageServer, startImageServer } from '../helpers/https-image-server.ts';
import { type ServiceHarness, startServiceHarness } from '../helpers/service-harness.ts';
import { createTestCertificates, type TestCertificates } from '../helpers/test-ca.ts';

const LEGACY = slotPath(SlotMode.Legacy, 'Slot_2');
const noSecret = new dbus.Variant('i', -1);
/** Helpers seen by the tests: killed at the end if a failure left any running. */
const seen: number[] = [];
function killSeen(): void {
  for (const pid of seen) if (processAlive(pid)) process.kill(pid, 'SIGKILL');
}
const dbusNext = fileURLToPath(import.meta.resolve('dbus-next'));

/** Running and not a zombie (an orphan's zombie may wait a while for its reaper). */
const alive = processAlive;

async function legacyMount(harness: ServiceHarness, url: string): Promise<number> {
  const since = harness.signals.length;
  assert.deepEqual(await harness.call(LEGACY, Interface.Legacy, 'Mount', 'sbv', [url, false, noSecret]), [
    true,
  ]);
  return harness.completion(LEGACY, since);
}

/** `socket:[…]` and `pipe:[…]` a process holds, by fd (what /proc/<pid>/fd links to). */
async function channels(pid: number): Promise<Map<number, string>> {
  const result = new Map<number, string>();
  for (const fd of await fs.readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
    const target = await fs.readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    if (/^(socket|pipe):/.test(target)) result.set(Number(fd), target);
  }
  return result;
}

async function nameHasOwner(client: MessageBus): Promise<boolean> {
  const reply = await client.call(
    new dbus.Message({
      destination: 'org.freedesktop.DBus',
      path: '/org/freedesktop/DBus',
      interface: 'org.freedesktop.DBus',
      member: 'NameHasOwner',
      signature: 's',
      body: [SERVICE_NAME],
    }),
  );
  return reply?.body[0] === true;
}

/** SIGKILL, then wait until the process is gone; the helpers it ran are checked by the caller. */
async function sigkill(harness: ServiceHarness): Promise<void> {
  harness.service.kill('SIGKILL');
  if (harness.service.exitCode === null && harness.service.signalCode === null) {
    await once(harness.service, 'exit');
  }
}

async function waitUntil(predicate: () => Promise<boolean> | boolean, what: string, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('a service killed with SIGKILL while a Legacy slot is mounted (emulated host)', () => {
  let dir: string;
  let certificates: TestCertificates;
  let server: ImageServer;
  let first: ServiceHarness;
  let second: ServiceHarness | undefined;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-crash-'));
    certificates = await createTestCertificates(dir);
    server = await startImageServer({ certificates, images: { '/disk.img': Buffer.alloc(1024 * 1024, 7) } });
  });
  after(async () => {
    killSeen();
    await second?.stop();
    await first?.stop();
    await server?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('helpers hold none of its descriptors, die with it, the name is freed and a new service mounts again', async () => {
    const env = { VMEDIA_CA_BUNDLE: certificates.caCertFile };
    first = await startServiceHarness({ env });
    const url = `${server.origin}/disk.img`;
    assert.equal(await legacyMount(first, url), 0, first.output());

    const helpers = await first.servicePids();
    seen.push(...helpers);
    assert.ok(helpers.length > 0, 'nbdkit runs');
    // Only stdio is meant to be shared; libuv gives each child its own socketpair ends, so any
    // socket or pipe the child holds that the service holds too was inherited (the bus socket).
    const ours = new Set((await channels(first.service.pid!)).values());
    for (const pid of helpers) {
      const shared = [...(await channels(pid))].filter(([fd, target]) => fd > 2 && ours.has(target));
      assert.deepEqual(shared, [], `helper ${pid} holds none of the service's sockets or pipes`);
    }

    await sigkill(first);
    await waitUntil(() => helpers.every((pid) => !alive(pid)), 'the helpers to die with the service');
    await waitUntil(async () => !(await nameHasOwner(first.client)), `${SERVICE_NAME} to be released`);

    second = await startServiceHarness({ env, shared: first });
    assert.equal(await legacyMount(second, url), 0, second.output());
    assert.equal((await second.getAll(LEGACY, Interface.Process)).Active, true);
  });
});

describe('a service killed with SIGKILL while a Legacy slot is mounted (usb-gadget host, fake kernel)', () => {
  let kernel: FakeKernel;
  let first: ServiceHarness;
  let second: ServiceHarness | undefined;
  // nbdkit-curl contacts the server only when a client connects; the fake nbd-client never does.
  const url = 'https://127.0.0.1:1/images/disk.img';

  before(async () => {
    kernel = await createFakeKernel();
  });
  after(async () => {
    killSeen();
    await second?.stop();
    await first?.stop();
    await kernel?.remove();
  });

  test('nbd-client and nbdkit die with it; the next service removes the gadget, disconnects nbd2, mounts', async () => {
    first = await startServiceHarness({ hostMode: 'usb-gadget', args: kernel.args });
    assert.equal(await legacyMount(first, url), 0, first.output());
    const helpers = await first.servicePids();
    seen.push(...helpers);
    assert.equal(helpers.length, 2, 'nbdkit and nbd-client run');
    assert.deepEqual(await kernel.gadgets(), ['mass-storage-Slot_2']);

    await sigkill(first);
    await waitUntil(
      () => helpers.every((pid) => !alive(pid)),
      'nbdkit and nbd-client to die with the service',
    );
    await waitUntil(async () => !(await nameHasOwner(first.client)), `${SERVICE_NAME} to be released`);
    // What a killed service leaves: its gadget, and nbd2 still "connected" to a dead nbd-client.
    assert.deepEqual(await kernel.gadgets(), ['mass-storage-Slot_2']);
    const sysBlock = path.join(kernel.dir, 'sys/block/nbd2');
    assert.notEqual((await fs.readFile(path.join(sysBlock, 'size'), 'utf8')).trim(), '0');

    second = await startServiceHarness({ hostMode: 'usb-gadget', args: kernel.args, shared: first });
    assert.deepEqual(await kernel.gadgets(), [], 'the stale gadget is removed on start');
    assert.match(await kernel.nbdClientArgv(), /^-d \/dev\/nbd2$/m, 'the stale nbd2 is disconnected');
    assert.deepEqual(await fs.readdir(second.runtimeDir), [], 'no stale socket or pidfile');
    assert.equal(await legacyMount(second, url), 0, second.output());
    assert.deepEqual(await kernel.gadgets(), ['mass-storage-Slot_2']);
  });
});

describe('a starting service removes what a dead one left (pidfiles, gadgets, NBD devices, bus name)', () => {
  let kernel: FakeKernel;
  let dir: string;
  let bus: PrivateBus;
  let harness: ServiceHarness | undefined;
  const leftovers: number[] = [];

  before(async () => {
    kernel = await createFakeKernel();
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-leftovers-'));
    await fs.mkdir(path.join(dir, 'state/run'), { recursive: true, mode: 0o700 });
    bus = await startPrivateBus(dir);
  });
  after(async () => {
    await harness?.stop();
    for (const pid of leftovers) if (alive(pid)) process.kill(pid, 'SIGKILL');
    await bus?.stop();
    await fs.rm(dir, { recursive: true, force: true });
    await kernel?.remove();
  });

  test('leftover nbdkit holding the dead owner’s bus socket, nbd-client, stale gadget: all cleaned, then a mount works', async () => {
    const run = path.join(dir, 'state/run');
    const socket = path.join(run, 'nbd2.sock');
    const nbdkitPidFile = path.join(run, 'Slot_2.nbdkit.pid');
    // The state the bug left: a process that owned the name died, and an nbdkit it started keeps its
    // (inherited, not close-on-exec) bus socket, so the bus still sees the name owned.
    const script = `
      import { spawn } from 'node:child_process';
      import fs from 'node:fs';
      const { default: dbus } = await import(${JSON.stringify(pathToFileURL(dbusNext).href)});
      const bus = dbus.sessionBus({ busAddress: ${JSON.stringify(bus.address)}, negotiateUnixFd: true });
      await new Promise((resolve) => bus.once('connect', resolve));
      await bus.requestName(${JSON.stringify(SERVICE_NAME)}, dbus.NameFlag.DO_NOT_QUEUE);
      spawn('nbdkit', ['--unix', ${JSON.stringify(socket)}, '--pidfile', ${JSON.stringify(nbdkitPidFile)}, 'memory', '1M'],
        { stdio: 'ignore', detached: true }).unref();
      while (!fs.existsSync(${JSON.stringify(nbdkitPidFile)})) await new Promise((r) => setTimeout(r, 20));
      process.kill(process.pid, 'SIGKILL');
    `;
    const owner = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'inherit' });
    await once(owner, 'exit');
    const nbdkitPid = Number((await fs.readFile(nbdkitPidFile, 'utf8')).trim());
    leftovers.push(nbdkitPid);
    assert.ok(alive(nbdkitPid));

    // A leftover nbd-client (pidfile written by the service) with nbd2 "connected", and a gadget.
    const nbdClient = spawn(
      kernel.nbdClient,
      ['-t', '90', '-b', '512', '-u', socket, '/dev/nbd2', '-n', '-L'],
      {
        stdio: 'ignore',
        detached: true,
      },
    );
    nbdClient.unref();
    leftovers.push(nbdClient.pid!);
    await fs.writeFile(path.join(run, 'Slot_2.nbd-client.pid'), `${nbdClient.pid}\n`);
    const sysBlock = path.join(kernel.dir, 'sys/block/nbd2');
    await waitUntil(
      async () => (await fs.readFile(path.join(sysBlock, 'size'), 'utf8')).trim() !== '0',
      'nbd2',
    );
    const gadgets = path.join(kernel.dir, 'configfs/usb_gadget');
    for (const [file, value] of [
      ['mass-storage-Slot_2/UDC', 'dummy_udc.0'],
      ['mass-storage-Slot_2/functions/mass_storage.usb0/lun.0/file', '/dev/nbd2'],
      ['mass-storage-Slot_2/configs/c.1/strings/0x409/configuration', 'config 1'],
      ['someone-else/UDC', ''],
    ]) {
      await fs.mkdir(path.dirname(path.join(gadgets, file)), { recursive: true });
      await fs.writeFile(path.join(gadgets, file), value);
    }

    harness = await startServiceHarness({
      hostMode: 'usb-gadget',
      args: kernel.args,
      shared: { dir, stateDir: path.join(dir, 'state'), bus },
    });
    assert.ok(!alive(nbdkitPid), 'the leftover nbdkit is killed');
    assert.ok(!alive(nbdClient.pid!), 'the leftover nbd-client is killed');
    assert.deepEqual(await kernel.gadgets(), ['someone-else'], 'only our stale gadget is removed');
    assert.match(await kernel.nbdClientArgv(), /^-d \/dev\/nbd2$/m);
    assert.equal((await fs.readFile(path.join(sysBlock, 'size'), 'utf8')).trim(), '0');
    assert.deepEqual(await fs.readdir(run), [], 'stale socket and pidfiles removed');
    assert.match(harness.output(), /killing a helper process left by a previous service/);

    const url = 'https://127.0.0.1:1/images/disk.img';
    assert.equal(await legacyMount(harness, url), 0, harness.output());
    assert.deepEqual((await kernel.gadgets()).sort(), ['mass-storage-Slot_2', 'someone-else']);
  });
});
