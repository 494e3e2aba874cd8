import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type ImageServer, startImageServer } from '../helpers/https-image-server.ts';
import { freeLoopbackPort } from '../helpers/ports.ts';
import type { RequestOptions } from '../helpers/server.ts';
import { createTestCertificates } from '../helpers/test-ca.ts';
import { messageIds, startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';

const collectionUri = '/redfish/v1/Managers/bmc/VirtualMedia';
const slotUri = `${collectionUri}/Slot_3`;
const insertUri = `${slotUri}/Actions/VirtualMedia.InsertMedia`;
/** Every password a test submits contains this, so one scan proves none came back. */
const SECRET = 'Pw-never-echoed-7f3a';
const image = Buffer.alloc(1024 * 1024, 0x5a);

describe('InsertMedia rules, failing images and PATCH through the real service', () => {
  let stack: VmStack;
  let imageUrl: string;
  let untrusted: ImageServer;
  let untrustedDir: string;
  const request = (method: string, uri: string, options?: RequestOptions) =>
    stack.request(method, uri, options);

  before(async () => {
    stack = await startVmStack({ images: { '/disk.img': image } });
    imageUrl = `${stack.images.origin}/disk.img`;
    // Same image, certificate from a CA the service does not trust.
    untrustedDir = await fs.mkdtemp(path.join(stack.dir, 'other-ca-'));
    const other = await createTestCertificates(untrustedDir, 'an untrusted CA');
    untrusted = await startImageServer({ certificates: other, images: { '/disk.img': image } });
  });

  after(async () => {
    await untrusted?.close();
    await stack?.stop();
  });

  const rules: Array<[string, RequestOptions, number, string[]]> = [
    [
      'a body that is not an object',
      { rawBody: '["x"]', headers: { 'Content-Type': 'application/json' } },
      400,
      ['MalformedJSON'],
    ],
    [
      'malformed JSON',
      { rawBody: '{"Image":', headers: { 'Content-Type': 'application/json' } },
      400,
      ['MalformedJSON'],
    ],
    ['no Image', { body: { Password: SECRET } }, 400, ['ActionParameterMissing']],
    [
      'Inserted false',
      { body: { Image: 'https://h/x.iso', Inserted: false } },
      400,
      ['ActionParameterNotSupported'],
    ],
    [
      'TransferMethod Upload',
      { body: { Image: 'https://h/x.iso', TransferMethod: 'Upload' } },
      400,
      ['ActionParameterNotSupported'],
    ],
    [
      'an unknown parameter',
      { body: { Image: 'https://h/x.iso', Colour: 'blue' } },
      400,
      ['ActionParameterUnknown'],
    ],
    ['Image of the wrong type', { body: { Image: 42 } }, 400, ['ActionParameterValueTypeError']],
    [
      'WriteProtected of the wrong type',
      { body: { Image: 'https://h/x.iso', WriteProtected: 'yes' } },
      400,
      ['ActionParameterValueTypeError'],
    ],
    [
      'Password of the wrong type',
      { body: { Image: 'https://h/x.iso', Password: 987654321 } },
      400,
      ['ActionParameterValueTypeError'],
    ],
    [
      'an Image that is no URL',
      { body: { Image: 'not a url', Password: SECRET } },
      400,
      ['ActionParameterValueFormatError'],
    ],
    [
      'credentials inside the URL',
      { body: { Image: `https://user:${SECRET}@h/x.iso` } },
      400,
      ['ActionParameterValueFormatError'],
    ],
    [
      'http://',
      { body: { Image: 'http://h/x.iso', Password: SECRET } },
      400,
      ['ResourceAtUriInUnknownFormat'],
    ],
    ['ftp://', { body: { Image: 'ftp://h/x.iso' } }, 400, ['ResourceAtUriInUnknownFormat']],
    ['file://', { body: { Image: 'file:///etc/passwd' } }, 400, ['ResourceAtUriInUnknownFormat']],
    [
      'TransferProtocolType outside the enum',
      { body: { Image: 'https://h/x.iso', TransferProtocolType: 'GOPHER' } },
      400,
      ['ActionParameterValueFormatError'],
    ],
    [
      'TransferProtocolType contradicting the URL',
      { body: { Image: 'https://h/x.iso', TransferProtocolType: 'CIFS', Password: SECRET } },
      400,
      ['ActionParameterValueConflict'],
    ],
    [
      'a password over 512 bytes',
      { body: { Image: 'https://h/x.iso', UserName: 'u', Password: SECRET + 'x'.repeat(512) } },
      400,
      ['ActionParameterValueError'],
    ],
    [
      'a password with NUL',
      { body: { Image: 'https://h/x.iso', UserName: 'u', Password: `${SECRET}\0x` } },
      400,
      ['ActionParameterValueError'],
    ],
    [
      'a user name with NUL',
      { body: { Image: 'https://h/x.iso', UserName: 'u\0v', Password: SECRET } },
      400,
      ['ActionParameterValueError'],
    ],
    [
      'ftp://',
      { body: { Image: 'ftp://h/share/x.iso', UserName: 'a', Password: SECRET } },
      400,
      ['ResourceAtUriInUnknownFormat'],
    ],
    [
      'TransferProtocolType HTTPS for an smb:// URL',
      { body: { Image: 'smb://h/share/x.iso', TransferProtocolType: 'HTTPS' } },
      400,
      ['ActionParameterValueConflict'],
    ],
    [
      'a space in the URL',
      { body: { Image: 'https://h/my image.iso' } },
      400,
      ['ActionParameterValueFormatError'],
    ],
    [
      'a line feed in the URL',
      { body: { Image: 'https://h/x\n.iso' } },
      400,
      ['ActionParameterValueFormatError'],
    ],
  ];
  for (const [what, options, status, ids] of rules) {
    test(`InsertMedia with ${what}: ${status} ${ids.join(', ')}`, async () => {
      const response = await request('POST', insertUri, options);
      assert.equal(response.status, status, response.text);
      assert.deepEqual(messageIds(response), ids);
    });
  }

  test('an smb:// path that names no file or leaves its share is refused by Redfish itself, saying why', async () => {
    for (const [image, reason] of [
      ['smb://h/share/../other/x.iso', 'The image URL must not contain . or .. path segments.'],
      ['smb://h/share/%2E%2E/x.iso', 'The image URL must not contain . or .. path segments.'],
      [
        'smb://h/share/a%2F..%2Fb.iso',
        'The image URL must not encode /, \\ or a control character in a path segment.',
      ],
      [
        'smb://h/share',
        'An smb:// image URL names a share and a file in it: smb://host/share/path/file.iso.',
      ],
      ['smb://h/share/x.iso?port=1', 'An smb:// image URL must not have a query or a fragment.'],
    ] as const) {
      for (const [method, uri] of [
        ['POST', insertUri],
        ['PATCH', slotUri],
      ] as const) {
        const response = await request(method, uri, { body: { Image: image } });
        assert.equal(response.status, 400, `${method} ${image}: ${response.text}`);
        const [message] = response.json.error['@Message.ExtendedInfo'];
        assert.match(message.MessageId, /PropertyValueFormatError$|ActionParameterValueFormatError$/);
        assert.equal(message.Resolution, reason);
        assert.deepEqual(message.RelatedProperties, ['#/Image']);
      }
    }
    const slot = await request('GET', slotUri);
    assert.equal(slot.json.Inserted, false);
  });

  test('InsertMedia or a PATCH of Image on a Proxy slot: 400, saying a browser or the CLI serves it', async () => {
    const proxySlotUri = `${collectionUri}/Slot_0`;
    const action = await request('POST', `${proxySlotUri}/Actions/VirtualMedia.InsertMedia`, {
      body: { Image: imageUrl },
    });
    assert.equal(action.status, 400);
    assert.deepEqual(messageIds(action), ['ActionNotSupported']);
    // What Ansible and Tacklebox fall back to; "read-only property" would send their users astray.
    const patch = await request('PATCH', proxySlotUri, { body: { Image: imageUrl, Inserted: true } });
    assert.equal(patch.status, 400);
    assert.deepEqual(messageIds(patch), ['PropertyValueConflict']);
    for (const response of [action, patch]) {
      const [message] = response.json.error['@Message.ExtendedInfo'];
      assert.match(message.Resolution, /streamed by a browser or the vmedia CLI/);
      assert.match(message.Resolution, /Legacy slot/);
    }
    assert.equal((await request('GET', proxySlotUri)).json.Inserted, false);
  });

  test('an unknown slot: 404 ResourceNotFound', async () => {
    const response = await request('POST', `${collectionUri}/Slot_9/Actions/VirtualMedia.InsertMedia`, {
      body: { Image: imageUrl },
    });
    assert.equal(response.status, 404);
    assert.deepEqual(messageIds(response), ['ResourceNotFound']);
  });

  test('without credentials 401; an Operator lacks ConfigureManager: 403', async () => {
    const anonymous = await request('POST', insertUri, { body: { Image: imageUrl }, auth: { none: true } });
    assert.equal(anonymous.status, 401);
    const created = await request('POST', '/redfish/v1/AccountService/Accounts', {
      body: { UserName: 'operator', Password: 'operator-Passw0rd!', RoleId: 'Operator' },
    });
    assert.equal(created.status, 201, created.text);
    const operator = await request('POST', insertUri, {
      body: { Image: imageUrl },
      auth: { basic: ['operator', 'operator-Passw0rd!'] },
    });
    assert.equal(operator.status, 403);
    assert.deepEqual(messageIds(operator), ['InsufficientPrivilege']);
    const read = await request('GET', slotUri, { auth: { basic: ['operator', 'operator-Passw0rd!'] } });
    assert.equal(read.status, 200);
  });

  const failures: Array<[string, () => Promise<string>, number, string, RegExp]> = [
    [
      'a closed port',
      async () => `https://127.0.0.1:${await freeLoopbackPort()}/disk.img`,
      400,
      'CouldNotEstablishConnection',
      /failed to establish a connection/,
    ],
    [
      'an untrusted certificate',
      async () => `${untrusted.origin}/disk.img`,
      400,
      'ResourceAtUriUnauthorized',
      /certificate is not trusted/,
    ],
    [
      'a missing image (404)',
      async () => `${stack.images.origin}/missing.img`,
      404,
      'ResourceNotFound',
      /was not found/,
    ],
  ];
  for (const [what, url, status, id, text] of failures) {
    test(`${what}: a quick failure answers at once, ${status} ${id}, and the slot stays clean`, async () => {
      const response = await request('POST', insertUri, {
        body: { Image: await url(), UserName: 'someone', Password: SECRET },
      });
      assert.equal(response.status, status, response.text);
      assert.deepEqual(messageIds(response), [id]);
      assert.match(response.json.error['@Message.ExtendedInfo'][0].Message, text);

      const slot = await request('GET', slotUri);
      assert.equal(slot.json.Inserted, false);
      assert.equal(slot.json.Image, null);
      assert.equal(slot.json.Status.State, 'Enabled');
      assert.deepEqual(await stack.harness.servicePids(), []);
      await assert.rejects(fs.access(path.join(stack.harness.hostDir, 'Slot_3.sock')));
    });
  }

  test('PATCH: If-Match is honoured, {"Image": uri} inserts, {"Image": null} ejects', async () => {
    const stale = await request('PATCH', slotUri, {
      body: { Image: imageUrl },
      headers: { 'If-Match': 'W/"not-the-current-etag"' },
    });
    assert.equal(stale.status, 412);
    assert.deepEqual(messageIds(stale), ['PreconditionFailed']);

    const current = await request('GET', slotUri);
    const accepted = await request('PATCH', slotUri, {
      body: { Image: imageUrl, Inserted: true, WriteProtected: true },
      headers: { 'If-Match': String(current.headers.etag) },
    });
    assert.equal(accepted.status, 204, accepted.text);
    const inserted = await request('GET', slotUri);
    assert.equal(inserted.json.Inserted, true);
    assert.notEqual(inserted.headers.etag, current.headers.etag);

    const ejected = await request('PATCH', slotUri, { body: { Image: null } });
    assert.equal(ejected.status, 204, ejected.text);
    assert.equal((await request('GET', slotUri)).json.Inserted, false);
  });

  test('PATCH: {"Inserted": false} on an empty slot is a no-op; read-only and unknown properties are refused', async () => {
    assert.equal((await request('PATCH', slotUri, { body: { Inserted: false } })).status, 204);
    const readOnly = await request('PATCH', slotUri, { body: { ConnectedVia: 'URI' } });
    assert.equal(readOnly.status, 400);
    assert.deepEqual(messageIds(readOnly), ['PropertyNotWritable']);
    const unknown = await request('PATCH', slotUri, { body: { Colour: 'blue' } });
    assert.deepEqual(messageIds(unknown), ['PropertyUnknown']);
    const noImage = await request('PATCH', slotUri, { body: { WriteProtected: false } });
    assert.deepEqual(messageIds(noImage), ['PropertyMissing']);
    const conflict = await request('PATCH', slotUri, {
      body: { Image: imageUrl, TransferProtocolType: 'NFS', Password: SECRET },
    });
    assert.deepEqual(messageIds(conflict), ['PropertyValueConflict']);
  });

  test('no response body ever contained a submitted password', () => {
    assert.ok(stack.responses.length > 30);
    for (const response of stack.responses) {
      assert.ok(!response.text.includes(SECRET), response.text);
      assert.ok(!response.text.includes('987654321'), response.text);
    }
  });
});
