import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import dbus from 'dbus-next';
import fc from 'fast-check';
import { Interface, SERVICE_NAME, SlotMode, slotPath } from '../../src/contract/dbus.ts';
import { outcomeOf, startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';
import { waitFor } from '../helpers/wait.ts';

const RUNS = Number(process.env.VMEDIA_PROPERTY_RUNS ?? 60);
/** VMEDIA_PROPERTY_SEED and VMEDIA_PROPERTY_PATH replay a failure fast-check reported. */
const replay = {
  ...(process.env.VMEDIA_PROPERTY_SEED ? { seed: Number(process.env.VMEDIA_PROPERTY_SEED) } : {}),
  ...(process.env.VMEDIA_PROPERTY_PATH ? { path: process.env.VMEDIA_PROPERTY_PATH } : {}),
};
const collectionUri = '/redfish/v1/Managers/bmc/VirtualMedia';
const insertUri = `${collectionUri}/Slot_2/Actions/VirtualMedia.InsertMedia`;

/** Characters aimed at what a URL ends up in: mount options, nbdkit arguments, log lines, paths. */
const nasty = fc.constantFrom(
  '\r',
  '\n',
  '\u0000',
  '\t',
  ' ',
  ',',
  ';',
  '"',
  "'",
  '`',
  '$(id)',
  '%00',
  '%0a',
  '%2f',
  '%2e%2e',
  '..',
  '\\',
  '@',
  ':',
  '#',
  '?',
  'é',
  '\u202e',
  '\ud83d\ude00',
  'password=x',
  '-o',
);
const segment = fc
  .array(fc.oneof(fc.string({ maxLength: 12 }), nasty), { maxLength: 5 })
  .map((parts) => parts.join(''));

/** Image URLs from plausible to hostile: schemes, userinfo, IPv6 literals, ports, paths, up to 8 KiB. */
const imageUrl = (origin: string) =>
  fc.oneof(
    {
      weight: 3,
      arbitrary: fc.array(segment, { maxLength: 4 }).map((parts) => `${origin}/${parts.join('/')}`),
    },
    {
      weight: 3,
      arbitrary: fc
        .record({
          scheme: fc.constantFrom('https://', 'http://', 'smb://', 'ftp://', 'file://', 'HTTPS://', '', '//'),
          userinfo: fc.constantFrom('', 'user:pass@', 'user@', ':@', 'a%40b:c@'),
          host: fc.constantFrom(
            '127.0.0.1',
            '[::1]',
            'localhost',
            '[::ffff:127.0.0.1]',
            '',
            '0',
            '127.1',
            '[fe80::1%25lo]',
            'host name',
          ),
          port: fc.constantFrom('', ':0', ':1', ':65536', ':-1', ':99999999999', ':445'),
          path: fc.array(segment, { maxLength: 4 }).map((parts) => `/${parts.join('/')}`),
          tail: fc.constantFrom('', '?a=b', '#frag', '?password=x', '/.iso', '.iso'),
        })
        .map(
          ({ scheme, userinfo, host, port, path, tail }) =>
            `${scheme}${userinfo}${host}${port}${path}${tail}`,
        ),
    },
    { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
    {
      weight: 1,
      arbitrary: fc.integer({ min: 1, max: 8192 }).map((length) => `${origin}/${'a'.repeat(length)}.iso`),
    },
  );

/**
 * What arrives from outside, drawn at random and thrown at the real server and the real service: every
 * answer is a 2xx or a 4xx with Redfish error messages (the test server validates every body against its
 * schema), never a 5xx, and the slot is Ready again after each case. The service, called directly on
 * D-Bus with the same URLs, refuses them itself or mounts them; it never dies.
 */
describe('hostile Redfish input against the real server and service', () => {
  let stack: VmStack;
  /** The service's open fds once it is up: after every case it must be back there. */
  let serviceFds: number;
  const fdsOf = async (pid: number) => (await fs.readdir(`/proc/${pid}/fd`)).length;

  before(async () => {
    stack = await startVmStack({ images: { '/ok.iso': new Uint8Array(64 * 1024) } });
    serviceFds = await fdsOf(stack.harness.service.pid!);
  });

  after(async () => {
    await stack?.stop();
  });

  // 503 is the service saying "not now" (with Retry-After); 501 is what DSP0266 asks for a `$` query
  // parameter the service does not implement. Any other 5xx is a failure of ours.
  const assertNoServerError = (status: number, what: string, text: string) =>
    assert.ok(
      status < 500 || status === 503 || (status === 501 && text.includes('QueryParameterUnsupported')),
      `${what} answered ${status}: ${text.slice(0, 300)}`,
    );

  const slotReady = (slotId: string) =>
    waitFor(() => stack.client.slot(slotId)?.active === false && stack.client.slot(slotId)?.imageUrl === '', {
      what: `${slotId} to be Ready`,
      timeoutMs: 30_000,
      intervalMs: 20,
    });

  test('InsertMedia with any Image: 2xx or 4xx with a message, and the slot returns to Ready', async () => {
    let cases = 0;
    await fc.assert(
      fc.asyncProperty(imageUrl(stack.images.origin), fc.boolean(), async (image, patch) => {
        cases++;
        const response = patch
          ? await stack.request('PATCH', `${collectionUri}/Slot_2`, { body: { Image: image } })
          : await stack.request('POST', insertUri, { body: { Image: image } });
        assertNoServerError(response.status, JSON.stringify(image), response.text);
        const outcome = await outcomeOf(stack, response);
        assertNoServerError(outcome.status, JSON.stringify(image), outcome.text);
        if (response.status >= 400) {
          assert.ok(response.json?.error?.['@Message.ExtendedInfo']?.length > 0, 'an error says why');
        }
        if (stack.client.slot('Slot_2')?.active) {
          await stack.request('POST', `${collectionUri}/Slot_2/Actions/VirtualMedia.EjectMedia`, {
            body: {},
          });
        }
        await slotReady('Slot_2');
      }),
      { numRuns: RUNS, verbose: 1, includeErrorInReport: true, ...replay },
    );
    console.log(`${cases} image URLs, every answer 2xx or 4xx, Slot_2 Ready after each`);
  });

  test('the service itself refuses what the server would, whoever calls Legacy.Mount', async () => {
    const bus = dbus.sessionBus({ busAddress: stack.harness.bus.address });
    try {
      const legacy = slotPath(SlotMode.Legacy, 'Slot_3');
      await fc.assert(
        fc.asyncProperty(imageUrl(stack.images.origin), async (image) => {
          const since = stack.harness.signals.length;
          const reply = await stack.harness
            .call(legacy, Interface.Legacy, 'Mount', 'sbv', [image, false, new dbus.Variant('i', -1)])
            .then(
              () => 'started',
              (error: { type?: string }) => error.type ?? String(error),
            );
          if (reply === 'started') {
            await stack.harness.completion(legacy, since);
            if (stack.client.slot('Slot_3')?.active)
              await stack.harness.call(legacy, Interface.Legacy, 'Unmount');
          } else if (!image.includes('\u0000')) {
            // (A D-Bus string cannot hold a NUL at all: the caller's library refuses to send it.)
            assert.match(reply, /^xyz\.openbmc_project\.Common\.Error\.\w+$/, JSON.stringify(image));
          }
          await slotReady('Slot_3');
        }),
        { numRuns: RUNS, verbose: 1, includeErrorInReport: true, ...replay },
      );
      const daemon = await bus.getProxyObject('org.freedesktop.DBus', '/org/freedesktop/DBus');
      assert.equal(await daemon.getInterface('org.freedesktop.DBus').NameHasOwner(SERVICE_NAME), true);
    } finally {
      bus.disconnect();
    }
  });

  test('nothing leaks: no helper process is left, the service holds the fds it started with', async () => {
    assert.deepEqual(await stack.harness.servicePids(), [], 'no nbdkit or other helper left');
    // A little slack for the D-Bus connection's own buffers; a leak per case would be dozens.
    assert.ok(
      (await fdsOf(stack.harness.service.pid!)) <= serviceFds + 2,
      `fds ${serviceFds} → ${await fdsOf(stack.harness.service.pid!)}`,
    );
  });

  test('any query string, id, header value or JSON body: never a 5xx', async () => {
    const uris = fc.oneof(
      fc
        .tuple(
          fc.constantFrom(collectionUri, '/redfish/v1/Systems/system', '/redfish/v1/SessionService/Sessions'),
          segment,
        )
        .map(([base, id]) => `${base}/${encodeURIComponent(id)}`),
      fc
        .tuple(
          fc.constantFrom(collectionUri, '/redfish/v1/', '/redfish/v1/TaskService/Tasks'),
          fc.string({ maxLength: 60 }),
        )
        .map(([base, query]) => `${base}?${query}`),
    );
    const headerValue = fc
      .string({ maxLength: 80 })
      .map((value) => value.replace(/[^\t\u0020-\u007e\u0080-\u00ff]/g, ''));
    const headers = fc.dictionary(
      fc.constantFrom(
        'If-Match',
        'If-None-Match',
        'OData-Version',
        'Accept',
        'Content-Type',
        'X-Requested-With',
      ),
      headerValue,
      { maxKeys: 3 },
    );
    const bodyTargets = [
      ['PATCH', `${collectionUri}/Slot_3`],
      ['POST', `${collectionUri}/Slot_3/Actions/VirtualMedia.InsertMedia`],
      ['PATCH', '/redfish/v1/Systems/system'],
      ['PATCH', '/redfish/v1/SessionService'],
      ['PATCH', '/redfish/v1/AccountService'],
      ['POST', '/redfish/v1/AccountService/Accounts'],
    ] as const;
    await fc.assert(
      fc.asyncProperty(
        uris,
        headers,
        fc.constantFrom(...bodyTargets),
        fc.jsonValue({ maxDepth: 3 }),
        async (uri, requestHeaders, [method, target], body) => {
          const read = await stack.request('GET', uri, { headers: requestHeaders });
          assertNoServerError(read.status, `GET ${uri}`, read.text);
          const write = await stack.request(method, target, { body, headers: requestHeaders });
          assertNoServerError(write.status, `${method} ${target} ${JSON.stringify(body)}`, write.text);
          if (stack.client.slot('Slot_3')?.active || stack.client.slot('Slot_3')?.imageUrl) {
            await outcomeOf(stack, write);
            await stack.request('POST', `${collectionUri}/Slot_3/Actions/VirtualMedia.EjectMedia`, {
              body: {},
            });
            await slotReady('Slot_3');
          }
        },
      ),
      { numRuns: RUNS * 3, verbose: 1, includeErrorInReport: true, ...replay },
    );
  });
});
