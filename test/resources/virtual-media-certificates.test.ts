import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { type ImageServer, startImageServer } from '../helpers/https-image-server.ts';
import { assertValidRedfish } from '../helpers/redfish-schema.ts';
import { createTestCertificates, type TestCertificates } from '../helpers/test-ca.ts';
import { messageIds, startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';
import { waitFor } from '../helpers/wait.ts';

const run = promisify(execFile);
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const collectionUri = '/redfish/v1/Systems/system/VirtualMedia';
const slotUri = `${collectionUri}/Slot_3`;
const certificatesUri = `${slotUri}/Certificates`;

/**
 * VirtualMedia v1_4 trust per slot: an image server signed by a private CA the service does not know
 * (the commonest complaint of this feature's users) is refused until an administrator adds that CA to
 * the slot's Certificates, or turns VerifyCertificate off. Real TLS, real nbdkit curl, the real service.
 */
describe('per-slot Certificates and VerifyCertificate', () => {
  const image = randomBytes(1024 * 1024 + 512);
  let stack: VmStack;
  let privateCa: TestCertificates;
  let privateServer: ImageServer;
  let imageUrl: string;

  before(async () => {
    stack = await startVmStack({ images: {} });
    const dir = await fs.mkdtemp(path.join(stack.dir, 'private-ca-'));
    privateCa = await createTestCertificates(dir, 'a private image CA');
    privateServer = await startImageServer({ certificates: privateCa, images: { '/os.img': image } });
    imageUrl = `${privateServer.origin}/os.img`;
  });

  after(async () => {
    await privateServer?.close();
    await stack?.stop();
  });

  const insert = () =>
    stack.request('POST', `${slotUri}/Actions/VirtualMedia.InsertMedia`, { body: { Image: imageUrl } });
  const eject = () => stack.request('POST', `${slotUri}/Actions/VirtualMedia.EjectMedia`);
  const exportBytes = async () => {
    const copy = path.join(stack.dir, 'trust-copy.img');
    await run('nbdcopy', [`nbd+unix:///?socket=${path.join(stack.harness.hostDir, 'Slot_3.sock')}`, copy]);
    return fs.readFile(copy);
  };

  test('a Legacy slot verifies by default and links an empty Certificates collection; a Proxy slot has neither', async () => {
    const member = await stack.request('GET', slotUri);
    assert.equal(member.json.VerifyCertificate, true);
    assert.deepEqual(member.json.Certificates, { '@odata.id': certificatesUri });
    const certificates = await stack.request('GET', certificatesUri);
    assert.equal(certificates.status, 200);
    assertValidRedfish(certificates.json);
    assert.equal(certificates.json['@odata.type'], '#CertificateCollection.CertificateCollection');
    assert.deepEqual(certificates.json.Members, []);
    const proxy = await stack.request('GET', `${collectionUri}/Slot_0`);
    assert.equal(proxy.json.VerifyCertificate, undefined);
    assert.equal((await stack.request('GET', `${collectionUri}/Slot_0/Certificates`)).status, 404);
  });

  test('an image server signed by an unknown CA is refused with a Resolution saying what to do', async () => {
    const response = await insert();
    assert.equal(response.status, 400, response.text);
    assert.deepEqual(messageIds(response), ['ResourceAtUriUnauthorized']);
    assert.equal((await stack.request('GET', slotUri)).json.Inserted, false);
  });

  let certificateUri: string;

  test('POST the CA to the slot: 201 with Location and the parsed certificate; the insert then works', async () => {
    const created = await stack.request('POST', certificatesUri, {
      body: { CertificateString: privateCa.caCert, CertificateType: 'PEM' },
    });
    assert.equal(created.status, 201, created.text);
    certificateUri = String(created.headers.location);
    assert.match(certificateUri, new RegExp(`^${certificatesUri}/[0-9a-f]{16}$`));
    assertValidRedfish(created.json);
    assert.equal(created.json.Subject.CommonName, 'a private image CA');
    assert.equal(created.json.CertificateType, 'PEM');
    assert.match(created.json.Fingerprint, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    const listed = await stack.request('GET', certificatesUri);
    assert.deepEqual(listed.json.Members, [{ '@odata.id': certificateUri }]);
    assert.equal((await stack.request('GET', certificateUri)).json.Id, certificateUri.split('/').pop());
    // The same CA on the other slot's collection is not there: trust is per slot.
    const other = await stack.request('GET', `${collectionUri}/Slot_2/Certificates`);
    assert.deepEqual(other.json.Members, []);
    // And under the Manager's collection it is the same slot, the same certificate.
    const managerView = await stack.request(
      'GET',
      '/redfish/v1/Managers/bmc/VirtualMedia/Slot_3/Certificates',
    );
    assert.equal(managerView.json['Members@odata.count'], 1);

    const inserted = await insert();
    assert.equal(inserted.status, 204, inserted.text);
    assert.equal(sha256(await exportBytes()), sha256(image));
    assert.equal((await eject()).status, 204);
  });

  test('the trust outlives a service restart (kept in the state folder)', async () => {
    await stack.killService();
    await stack.restartService();
    await waitFor(
      async () => (await stack.request('GET', certificatesUri)).json?.['Members@odata.count'] === 1,
      {
        what: 'the restarted service to publish the slot certificate',
        timeoutMs: 20_000,
        intervalMs: 100,
      },
    );
    assert.equal((await insert()).status, 204);
    assert.equal((await eject()).status, 204);
  });

  test('DELETE the certificate: the slot no longer trusts the server', async () => {
    assert.equal((await stack.request('DELETE', certificateUri)).status, 204);
    assert.equal((await stack.request('GET', certificateUri)).status, 404);
    const response = await insert();
    assert.deepEqual(messageIds(response), ['ResourceAtUriUnauthorized']);
  });

  test('PATCH VerifyCertificate false: the unknown CA is accepted; true again refuses it', async () => {
    const patched = await stack.request('PATCH', slotUri, { body: { VerifyCertificate: false } });
    assert.equal(patched.status, 200, patched.text);
    assert.equal(patched.json.VerifyCertificate, false);
    assert.equal((await insert()).status, 204);
    assert.equal(sha256(await exportBytes()), sha256(image));
    assert.equal((await eject()).status, 204);
    assert.equal((await stack.request('PATCH', slotUri, { body: { VerifyCertificate: true } })).status, 200);
    assert.deepEqual(messageIds(await insert()), ['ResourceAtUriUnauthorized']);
  });

  test('not a certificate, two at once, or a Proxy slot: 400 with the reason, nothing stored', async () => {
    const garbage = await stack.request('POST', certificatesUri, {
      body: {
        CertificateString: '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n',
        CertificateType: 'PEM',
      },
    });
    assert.equal(garbage.status, 400, garbage.text);
    assert.deepEqual(messageIds(garbage), ['PropertyValueFormatError']);
    assert.match(garbage.json.error['@Message.ExtendedInfo'][0].Resolution, /^Not a valid PEM certificate: /);
    const two = await stack.request('POST', certificatesUri, {
      body: { CertificateString: `${privateCa.caCert}\n${privateCa.caCert}`, CertificateType: 'PEM' },
    });
    assert.match(
      two.json.error['@Message.ExtendedInfo'][0].Resolution,
      /^Expected exactly one PEM certificate\.$/,
    );
    const wrongType = await stack.request('POST', certificatesUri, {
      body: { CertificateString: privateCa.caCert, CertificateType: 'PKCS7' },
    });
    assert.equal(wrongType.status, 400);
    const proxy = await stack.request('PATCH', `${collectionUri}/Slot_0`, {
      body: { VerifyCertificate: false },
    });
    assert.equal(proxy.status, 400);
    assert.deepEqual((await stack.request('GET', certificatesUri)).json.Members, []);
  });

  test('changing trust needs ConfigureManager', async () => {
    await stack.request('POST', '/redfish/v1/AccountService/Accounts', {
      body: { UserName: 'watcher', Password: 'watcher-Passw0rd!', RoleId: 'ReadOnly' },
    });
    const auth = { basic: ['watcher', 'watcher-Passw0rd!'] as [string, string] };
    assert.equal((await stack.request('GET', certificatesUri, { auth })).status, 200);
    const post = await stack.request('POST', certificatesUri, {
      auth,
      body: { CertificateString: privateCa.caCert, CertificateType: 'PEM' },
    });
    assert.equal(post.status, 403);
    const patch = await stack.request('PATCH', slotUri, { auth, body: { VerifyCertificate: false } });
    assert.equal(patch.status, 403);
  });
});
