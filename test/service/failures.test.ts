import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import dbus from 'dbus-next';
import { DbusError, Errno, Interface, SlotMode, slotPath } from '../../src/contract/dbus.ts';
import { withCredentialsPipe } from '../../src/dbus/credentials-pipe.ts';
import { type ImageServer, startImageServer } from '../helpers/https-image-server.ts';
import { listenUnix } from '../helpers/nbdkit.ts';
import { proxySlotConfig, type ServiceHarness, startServiceHarness } from '../helpers/service-harness.ts';
import { createTestCertificates } from '../helpers/test-ca.ts';

const LEGACY = slotPath(SlotMode.Legacy, 'Slot_2');
const PROXY = slotPath(SlotMode.Proxy, 'Slot_0');
const noSecret = new dbus.Variant('i', -1);
const run = promisify(execFile);
/** Far longer than a failure takes; reached only if nbdcopy hangs on a dead source. */
const NBDCOPY_TIMEOUT_MS = 60_000;

describe('failures end in Ready with the right errno and no leftovers', () => {
  let dir: string;
  let harness: ServiceHarness;
  let trusted: ImageServer;
  let untrusted: ImageServer;
  let stalling: ImageServer;
  /** Ranged GETs the stalling server has received; all but the first are left unanswered. */
  let rangedGets = 0;
  const image = crypto.randomBytes(1024 * 1024);

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-failures-'));
    await fs.mkdir(path.join(dir, 'ca'));
    await fs.mkdir(path.join(dir, 'rogue'));
    const certificates = await createTestCertificates(path.join(dir, 'ca'));
    const rogue = await createTestCertificates(path.join(dir, 'rogue'), 'a CA nobody trusts');
    const images = { '/disk.img': image };
    trusted = await startImageServer({ certificates, images, credentials: { user: 'u', password: 'right' } });
    untrusted = await startImageServer({ certificates: rogue, images });
    stalling = await startImageServer({
      certificates,
      images,
      stall: (request) => request.method === 'GET' && request.range !== undefined && ++rangedGets > 1,
    });
    harness = await startServiceHarness({
      env: { VMEDIA_CA_BUNDLE: certificates.caCertFile },
      config: (runtimeDir) => ({
        InactivityTimeout: 0,
        MountPoints: {
          Slot_0: { ...proxySlotConfig(runtimeDir, 0), Timeout: 1 },
          Slot_2: { Mode: 1, NBDDevice: '/dev/nbd2', UnixSocket: `${runtimeDir}/nbd2.sock`, Timeout: 30 },
        },
      }),
    });
  });
  after(async () => {
    await harness?.stop();
    await trusted?.close();
    await untrusted?.close();
    await stalling?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  afterEach(async () => {
    // Whatever happened, the slot is idle and nothing of it is left behind.
    for (const slot of [LEGACY, PROXY]) {
      assert.equal((await harness.getAll(slot, Interface.Process)).Active, false);
    }
    assert.deepEqual(await harness.servicePids(), [], 'no child process left');
    assert.deepEqual(await fs.readdir(harness.hostDir), [], 'no host export left');
    assert.deepEqual(await fs.readdir(harness.runtimeDir), ['ca-bundle.pem'], 'no socket or pidfile left');
  });

  async function nbdkitPid(): Promise<number> {
    const [nbdkit] = await harness.servicePids();
    assert.ok(nbdkit);
    assert.match(await fs.readFile(`/proc/${nbdkit}/comm`, 'utf8'), /nbdkit/);
    return nbdkit;
  }

  async function legacyMount(url: string, credentials?: { user: string; password: string }): Promise<number> {
    const since = harness.signals.length;
    const [started] = credentials
      ? await withCredentialsPipe(credentials, (fd) =>
          harness.call(LEGACY, Interface.Legacy, 'Mount', 'sbh', [url, false, fd]),
        )
      : await harness.call(LEGACY, Interface.Legacy, 'Mount', 'sbv', [url, false, noSecret]);
    assert.equal(started, true);
    const errno = await harness.completion(LEGACY, since);
    const exitCode = (await harness.getAll(LEGACY, Interface.Process)).ExitCode;
    assert.equal(exitCode, errno === 0 ? -1 : errno, 'ExitCode: -1 while mounted, the errno after a failure');
    return errno;
  }

  test('untrusted certificate → EPERM', async () => {
    assert.equal(await legacyMount(`${untrusted.origin}/disk.img`), Errno.EPERM);
    assert.equal(untrusted.requests.length, 0, 'no request got past the TLS handshake');
  });

  test('404 → ENOENT', async () => {
    assert.equal(
      await legacyMount(`${trusted.origin}/missing.img`, { user: 'u', password: 'right' }),
      Errno.ENOENT,
    );
  });

  test('wrong password → EACCES', async () => {
    assert.equal(
      await legacyMount(`${trusted.origin}/disk.img`, { user: 'u', password: 'wrong' }),
      Errno.EACCES,
    );
  });

  test('closed port → ECONNREFUSED', async () => {
    assert.equal(await legacyMount('https://127.0.0.1:1/disk.img'), Errno.ECONNREFUSED);
  });

  test('nbdkit killed while mounted → Completion(EIO)', async () => {
    assert.equal(await legacyMount(`${trusted.origin}/disk.img`, { user: 'u', password: 'right' }), 0);
    const nbdkit = await nbdkitPid();
    const since = harness.signals.length;
    process.kill(nbdkit, 'SIGKILL');
    assert.equal(await harness.completion(LEGACY, since), Errno.EIO);
  });

  test('nbdkit killed mid-transfer → nbdcopy fails, Completion(EIO)', async () => {
    assert.equal(await legacyMount(`${stalling.origin}/disk.img`), 0);
    const hostUri = `nbd+unix:///?socket=${path.join(harness.hostDir, 'Slot_2.sock')}`;
    const copy = run('nbdcopy', [hostUri, path.join(dir, 'copy.img')], { timeout: NBDCOPY_TIMEOUT_MS });
    copy.catch(() => undefined);
    await harness.waitFor(() => rangedGets > 1, 'a read of the copy to be stalled at the server');
    const nbdkit = await nbdkitPid();
    const since = harness.signals.length;
    process.kill(nbdkit, 'SIGKILL');
    assert.equal(await harness.completion(LEGACY, since), Errno.EIO);
    await assert.rejects(copy, (error: { killed?: boolean }) => !error.killed, 'nbdcopy failed, not hung');
    assert.deepEqual(await harness.getAll(LEGACY, Interface.Process), { Active: false, ExitCode: Errno.EIO });
  });

  test('Mount while Active → System.Error.EBUSY; the mounted medium is untouched', async () => {
    assert.equal(await legacyMount(`${trusted.origin}/disk.img`, { user: 'u', password: 'right' }), 0);
    await assert.rejects(
      harness.call(LEGACY, Interface.Legacy, 'Mount', 'sbv', [`${trusted.origin}/disk.img`, false, noSecret]),
      (error: InstanceType<typeof dbus.DBusError>) => error.type === DbusError.Busy,
    );
    assert.equal((await harness.getAll(LEGACY, Interface.Process)).Active, true);
    const since = harness.signals.length;
    assert.deepEqual(await harness.call(LEGACY, Interface.Legacy, 'Unmount'), [true]);
    assert.equal(await harness.completion(LEGACY, since), 0);
  });

  test('garbage instead of an NBD handshake → EIO', async () => {
    const server = await listenUnix(path.join(harness.runtimeDir, 'nbd0.sock'), (socket) =>
      socket.end(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\nthis is not NBD at all')),
    );
    try {
      const since = harness.signals.length;
      assert.deepEqual(await harness.call(PROXY, Interface.Proxy, 'Mount'), [true]);
      assert.equal(await harness.completion(PROXY, since), Errno.EIO);
    } finally {
      await server.close();
    }
  });

  test('a silent server → the completion timer fires: EBUSY; Mount while Activating is busy', async () => {
    const server = await listenUnix(path.join(harness.runtimeDir, 'nbd0.sock'), () => {});
    try {
      const since = harness.signals.length;
      assert.deepEqual(await harness.call(PROXY, Interface.Proxy, 'Mount'), [true]);
      await assert.rejects(
        harness.call(PROXY, Interface.Proxy, 'Mount'),
        (error: InstanceType<typeof dbus.DBusError>) => error.type === DbusError.Busy,
      );
      assert.equal(await harness.completion(PROXY, since), Errno.EBUSY);
      assert.equal(server.connections.length, 1);
      await harness.waitFor(() => server.connections[0]!.closed, 'the abandoned connection to be closed');
    } finally {
      await server.close();
    }
  });

  test('Unmount while Activating cancels the mount → ECANCELED', async () => {
    const server = await listenUnix(path.join(harness.runtimeDir, 'nbd0.sock'), () => {});
    try {
      const since = harness.signals.length;
      assert.deepEqual(await harness.call(PROXY, Interface.Proxy, 'Mount'), [true]);
      await harness.waitFor(() => server.connections.length === 1, 'the service to connect');
      assert.deepEqual(await harness.call(PROXY, Interface.Proxy, 'Unmount'), [true]);
      assert.equal(await harness.completion(PROXY, since), Errno.ECANCELED);
      const completions = harness.signals.slice(since).filter((s) => s.member === 'Completion');
      assert.equal(completions.length, 1, 'exactly one Completion');
    } finally {
      await server.close();
    }
  });
});
