import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { freeLoopbackPort } from '../helpers/ports.ts';
import { type SambaServer, startSamba } from '../helpers/samba.ts';
import type { RequestOptions, Response } from '../helpers/server.ts';
import { processesExposing } from '../helpers/service-harness.ts';
import { messageIds, outcomeOf, startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';

const run = promisify(execFile);
const slotUri = '/redfish/v1/Managers/bmc/VirtualMedia/Slot_2';
const insertUri = `${slotUri}/Actions/VirtualMedia.InsertMedia`;
const ejectUri = `${slotUri}/Actions/VirtualMedia.EjectMedia`;
const USER = 'imaging';
/** A comma and a space in it: the kernel path's mount options must not split it. */
const PASSWORD = 'Smb-pässword, 9c41-never-leak';
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

/**
 * Legacy smb:// through Redfish on a machine whose kernel has no CIFS: the service picks the userspace
 * client (nbdkit + libsmbclient) and reads the image from a real Samba server that requires encryption.
 */
describe('Redfish InsertMedia from an SMB 3 share (userspace client, real Samba, emulated host)', () => {
  // Not a multiple of 512, so a size rounded anywhere shows in the hash.
  const image = randomBytes(2 * 1024 * 1024 + 1234);
  let stack: VmStack;
  let encrypting: SambaServer;
  let plain: SambaServer;
  let shareDir: string;
  let writableDir: string;
  let imageUrl: string;
  const request = (method: string, uri: string, options?: RequestOptions) =>
    stack.request(method, uri, options);

  before(async () => {
    stack = await startVmStack({ images: {} });
    shareDir = await fs.mkdtemp(path.join(stack.dir, 'share-'));
    await fs.mkdir(path.join(shareDir, 'os images'));
    await fs.writeFile(path.join(shareDir, 'os images', 'disk.img'), image);
    writableDir = await fs.mkdtemp(path.join(stack.dir, 'writable-'));
    await fs.writeFile(path.join(writableDir, 'scratch.img'), Buffer.alloc(image.length));
    const shares = { images: shareDir, scratch: writableDir };
    const writable = ['scratch'];
    encrypting = await startSamba({ encrypt: 'required', user: USER, password: PASSWORD, shares, writable });
    plain = await startSamba({ encrypt: 'off', user: USER, password: PASSWORD, shares });
    imageUrl = `smb://127.0.0.1:${encrypting.port}/images/os%20images/disk.img`;
  });

  after(async () => {
    await stack?.stop();
    await encrypting?.stop();
    await plain?.stop();
  });

  /** InsertMedia's outcome, whether answered at once or through a task. */
  async function insert(body: Record<string, unknown>): Promise<{ final: Response }> {
    return { final: await outcomeOf(stack, await request('POST', insertUri, { body })) };
  }

  async function assertCleanSlot(): Promise<void> {
    const slot = await request('GET', slotUri);
    assert.equal(slot.json.Inserted, false);
    assert.equal(slot.json.Image, null);
    assert.equal(slot.json.Status.State, 'Enabled');
    assert.deepEqual(await stack.harness.servicePids(), [], 'no nbdkit left');
    assert.deepEqual(await fs.readdir(stack.harness.hostDir), [], 'no host export left');
    const leftovers = (await fs.readdir(stack.harness.runtimeDir)).filter((f) => f.startsWith('Slot_2'));
    assert.deepEqual(leftovers, [], 'no socket or pid file left');
  }

  test('with credentials: the task completes, CIFS is shown, the host reads every byte over an encrypted session', async () => {
    const { final } = await insert({ Image: imageUrl, UserName: USER, Password: PASSWORD });
    assert.equal(final.status, 204, final.text);

    const { json: member } = await request('GET', slotUri);
    assert.equal(member.Inserted, true);
    assert.equal(member.TransferProtocolType, 'CIFS');
    assert.equal(member.Image, imageUrl);
    assert.equal(member.ImageName, 'disk.img');
    assert.equal(member.WriteProtected, true);

    const copy = path.join(stack.dir, 'copy.img');
    const socket = path.join(stack.harness.hostDir, 'Slot_2.sock');
    await run('nbdcopy', [`nbd+unix:///?socket=${socket}`, copy]);
    assert.equal(sha256(await fs.readFile(copy)), sha256(image));
    await assert.rejects(
      run('nbdcopy', [copy, `nbd+unix:///?socket=${socket}`]),
      'the export is read-only when WriteProtected',
    );

    const sessions = await encrypting.sessions();
    assert.equal(sessions.length, 1, JSON.stringify(sessions));
    assert.match(sessions[0]!.protocol, /^SMB3_/);
    assert.match(sessions[0]!.encryption, /^AES-(128|256)-(GCM|CCM)$/, 'the session is encrypted');

    const pids = [stack.harness.service.pid!, ...(await stack.harness.servicePids())];
    assert.ok(pids.length >= 2, 'nbdkit runs as a child of the service');
    assert.deepEqual(await processesExposing(PASSWORD, [...pids, process.pid]), []);
  });

  test('EjectMedia ends the SMB session and leaves nothing behind', async () => {
    const ejected = await request('POST', ejectUri, { body: {} });
    assert.equal(ejected.status, 204, ejected.text);
    await assertCleanSlot();
    await stack.harness.waitFor(async () => (await encrypting.sessions()).length === 0, 'the session to end');
  });

  const failures: Array<[string, () => Promise<Record<string, unknown>>, number, string, RegExp]> = [
    [
      'a wrong password',
      async () => ({ Image: imageUrl, UserName: USER, Password: `${PASSWORD}-wrong` }),
      400,
      'ResourceAtUriUnauthorized',
      /access denied/,
    ],
    [
      'a missing share',
      async () => ({
        Image: `smb://127.0.0.1:${encrypting.port}/nosuchshare/disk.img`,
        UserName: USER,
        Password: PASSWORD,
      }),
      404,
      'ResourceNotFound',
      /was not found/,
    ],
    [
      'a missing file',
      async () => ({ Image: imageUrl.replace('disk.img', 'other.img'), UserName: USER, Password: PASSWORD }),
      404,
      'ResourceNotFound',
      /was not found/,
    ],
    [
      'a server that does not encrypt',
      async () => ({
        Image: imageUrl.replace(`:${encrypting.port}/`, `:${plain.port}/`),
        UserName: USER,
        Password: PASSWORD,
      }),
      400,
      'CouldNotEstablishConnection',
      /failed to establish a connection/,
    ],
    [
      'an unreachable server (closed port)',
      async () => ({
        Image: `smb://127.0.0.1:${await freeLoopbackPort()}/images/disk.img`,
        UserName: USER,
        Password: PASSWORD,
      }),
      400,
      'CouldNotEstablishConnection',
      /failed to establish a connection/,
    ],
  ];
  for (const [what, body, status, id, text] of failures) {
    test(`${what}: InsertMedia fails with ${status} ${id}, the slot stays clean`, async () => {
      const { final } = await insert(await body());
      assert.equal(final.status, status, final.text);
      assert.deepEqual(messageIds(final), [id]);
      const [message] = final.json.error['@Message.ExtendedInfo'];
      assert.match(message.Message, text);
      if (what.includes('encrypt')) assert.match(message.Resolution, /does not offer SMB3 encryption/);
      await assertCleanSlot();
    });
  }

  test('after every failure the slot takes the image again', async () => {
    const { final } = await insert({ Image: imageUrl, UserName: USER, Password: PASSWORD });
    assert.equal(final.status, 204, final.text);
    assert.equal((await request('POST', ejectUri, { body: {} })).status, 204);
    await assertCleanSlot();
  });

  test('WriteProtected false on a writable share: the host writes through to the file on the share', async () => {
    const url = `smb://127.0.0.1:${encrypting.port}/scratch/scratch.img`;
    const { final } = await insert({ Image: url, UserName: USER, Password: PASSWORD, WriteProtected: false });
    assert.equal(final.status, 204, final.text);
    assert.equal((await request('GET', slotUri)).json.WriteProtected, false);
    const written = randomBytes(image.length);
    const source = path.join(stack.dir, 'written.img');
    await fs.writeFile(source, written);
    const socket = path.join(stack.harness.hostDir, 'Slot_2.sock');
    await run('nbdcopy', [source, `nbd+unix:///?socket=${socket}`]);
    assert.equal((await request('POST', ejectUri, { body: {} })).status, 204);
    await assertCleanSlot();
    assert.equal(sha256(await fs.readFile(path.join(writableDir, 'scratch.img'))), sha256(written));
  });

  test('the password is in no response and no log line', async () => {
    assert.ok(stack.responses.length > 10);
    for (const response of stack.responses) assert.ok(!response.text.includes(PASSWORD), response.text);
    assert.ok(!stack.harness.output().includes(PASSWORD), 'service log');
    assert.ok(!(await encrypting.log()).includes(PASSWORD), 'smbd log');
  });
});
