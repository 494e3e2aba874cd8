import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { encodeCredentials } from '../../src/contract/credentials.ts';
import { Errno, Interface, SlotMode, slotPath } from '../../src/contract/dbus.ts';
import { withCredentialsPipe } from '../../src/dbus/credentials-pipe.ts';
import { type ImageServer, startImageServer } from '../helpers/https-image-server.ts';
import { processesExposing, type ServiceHarness, startServiceHarness } from '../helpers/service-harness.ts';
import { createTestCertificates, type TestCertificates } from '../helpers/test-ca.ts';
import { waitFor } from '../helpers/wait.ts';

const run = promisify(execFile);
const PASSWORD = 'pw-7f3a9c1e-never-leak';
const USER = 'media';
const LEGACY = slotPath(SlotMode.Legacy, 'Slot_2');

describe('Legacy HTTPS mount through D-Bus (nbdkit curl, emulated host)', () => {
  let dir: string;
  let certificates: TestCertificates;
  let server: ImageServer;
  let harness: ServiceHarness;
  // Not a multiple of 512, so a size rounded anywhere shows up in the hash.
  const image = crypto.randomBytes(3 * 1024 * 1024 + 517);

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-legacy-'));
    certificates = await createTestCertificates(dir);
    server = await startImageServer({
      certificates,
      images: { '/images/disk.img': image },
      credentials: { user: USER, password: PASSWORD },
    });
    harness = await startServiceHarness({ env: { VMEDIA_CA_BUNDLE: certificates.caCertFile } });
  });

  after(async () => {
    await harness?.stop();
    await server?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('mount, read the bytes as the host, count the reads, leak no password, unmount clean', async () => {
    const url = `${server.origin}/images/disk.img`;
    const since = harness.signals.length;
    const [started] = await withCredentialsPipe({ user: USER, password: PASSWORD }, (fd) =>
      harness.call(LEGACY, Interface.Legacy, 'Mount', 'sbh', [url, false, fd]),
    );
    assert.equal(started, true);
    assert.equal(await harness.completion(LEGACY, since), 0, harness.output());

    const mountPoint = await harness.getAll(LEGACY, Interface.MountPoint);
    assert.equal(mountPoint.ImageURL, url);
    assert.equal(mountPoint.WriteProtected, true);
    assert.deepEqual(await harness.getAll(LEGACY, Interface.Process), { Active: true, ExitCode: -1 });
    const activeChange = harness.signals
      .slice(since)
      .find(
        (s) => s.member === 'PropertiesChanged' && s.body[0] === Interface.Process && 'Active' in s.body[1],
      );
    assert.equal(activeChange?.body[1].Active.value, true, 'PropertiesChanged announced Active');

    const copy = path.join(dir, 'copy.img');
    const hostSocket = path.join(harness.hostDir, 'Slot_2.sock');
    await run('nbdcopy', [`nbd+unix:///?socket=${hostSocket}`, copy]);
    const sha = (bytes: Buffer) => crypto.createHash('sha256').update(bytes).digest('hex');
    assert.equal(sha(await fs.readFile(copy)), sha(image));
    assert.ok(
      server.requests.some((r) => r.authorized && r.range),
      'nbdkit fetched ranges with the credentials',
    );
    await assert.rejects(
      run('nbdcopy', [copy, `nbd+unix:///?socket=${hostSocket}`]),
      'the host export is read-only when WriteProtected',
    );
    await harness.waitFor(
      async () => ((await harness.getAll(LEGACY, Interface.Stats)).ReadIO as bigint) > 0n,
      'ReadIO to grow',
    );

    const pids = [harness.service.pid!, ...(await harness.servicePids())];
    assert.ok(pids.length >= 2, 'nbdkit runs as a child of the service');
    assert.deepEqual(await processesExposing(PASSWORD, pids), []);
    assert.ok(!harness.output().includes(PASSWORD), 'the password is in no log line');

    const beforeUnmount = harness.signals.length;
    assert.deepEqual(await harness.call(LEGACY, Interface.Legacy, 'Unmount'), [true]);
    assert.equal(await harness.completion(LEGACY, beforeUnmount), 0);
    assert.deepEqual(await harness.getAll(LEGACY, Interface.Process), { Active: false, ExitCode: 0 });
    assert.equal((await harness.getAll(LEGACY, Interface.MountPoint)).ImageURL, '');
    assert.deepEqual(await harness.servicePids(), [], 'no nbdkit left');
    assert.deepEqual(await fs.readdir(harness.hostDir), [], 'host export socket removed');
    assert.deepEqual(
      await fs.readdir(harness.runtimeDir),
      ['ca-bundle.pem'],
      'slot socket and pidfile removed',
    );
    assert.ok(!harness.output().includes(PASSWORD));
  });

  // What other D-Bus clients hand over instead of a pipe: an unlinked 0600 file, written and not rewound
  // (a memfd is a regular file to fstat and takes the same path), is read from its start; a directory or
  // a device is refused at once with EINVAL and says why. The slot is Ready again after each.
  test('the credentials fd may be a regular file; a directory or a device is EINVAL with a reason', async () => {
    const url = `${server.origin}/images/disk.img`;
    const file = path.join(dir, 'credentials');
    const handle = await fs.open(file, 'w+', 0o600);
    await fs.rm(file);
    await handle.write(encodeCredentials(USER, PASSWORD));
    try {
      const since = harness.signals.length;
      assert.deepEqual(
        await harness.call(LEGACY, Interface.Legacy, 'Mount', 'sbh', [url, false, handle.fd]),
        [true],
      );
      assert.equal(await harness.completion(LEGACY, since), 0, harness.output());
      const unmounted = harness.signals.length;
      assert.deepEqual(await harness.call(LEGACY, Interface.Legacy, 'Unmount'), [true]);
      assert.equal(await harness.completion(LEGACY, unmounted), 0);
    } finally {
      await handle.close();
    }

    for (const [what, target, reason] of [
      ['a directory', dir, /the credentials fd is a directory: pass a pipe, a socket or a file/],
      ['a device', '/dev/null', /the credentials fd is a character device/],
    ] as const) {
      const opened = await fs.open(target, 'r');
      try {
        const since = harness.signals.length;
        await harness.call(LEGACY, Interface.Legacy, 'Mount', 'sbh', [url, false, opened.fd]);
        assert.equal(await harness.completion(LEGACY, since), Errno.EINVAL, what);
        // The log line comes through the service's stdout, which may lag behind the D-Bus signal.
        await waitFor(() => reason.test(harness.output()), {
          what: `the log to say why (${what})`,
          timeoutMs: 5000,
        });
      } finally {
        await opened.close();
      }
      assert.deepEqual(await harness.getAll(LEGACY, Interface.Process), {
        Active: false,
        ExitCode: Errno.EINVAL,
      });
      assert.equal(
        (await harness.getAll(LEGACY, Interface.MountPoint)).ImageURL,
        '',
        `${what}: the slot is Ready`,
      );
    }
    assert.doesNotMatch(harness.output(), /Unsupported fd type/);
    assert.ok(!harness.output().includes(PASSWORD));
  });
});
