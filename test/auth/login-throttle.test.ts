import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { adminPassword, type RequestOptions, startTestServer, type TestServer } from '../helpers/server.ts';
import { messageIds } from '../helpers/virtual-media-stack.ts';

const WINDOW_SECONDS = 2;
const MAX_FAILURES = 5;

/**
 * Failed logins are limited per client address in front of the password check, on every login path,
 * and sessions are limited per account and in all (docs/contract.md §3). The real server, with small
 * limits so the test is quick.
 */
describe('login throttling and session limits', () => {
  let server: TestServer;
  // Guesses at an account that does not exist: they count against the address, and lock no account out
  // (a wrong admin password would also trip admin's own lockout, which is AccountService's, not this).
  const bad = { basic: ['nobody', 'not the password'] as [string, string] };

  before(async () => {
    server = await startTestServer({
      loginThrottle: { maxFailures: MAX_FAILURES, windowSeconds: WINDOW_SECONDS, maxConcurrent: 4 },
      sessionLimits: { perAccount: 3, total: 5 },
    });
  });

  after(async () => {
    await server?.close();
  });

  const get = (options: RequestOptions) => server.request('GET', '/redfish/v1/Managers/bmc', options);

  test('an address that failed too often gets 429 with Retry-After on every login path, then recovers', async () => {
    for (let attempt = 0; attempt < MAX_FAILURES; attempt++)
      assert.equal((await get({ auth: bad })).status, 401);
    const refused = await get({ auth: bad });
    assert.equal(refused.status, 429);
    assert.deepEqual(messageIds(refused), ['ServiceTemporarilyUnavailable']);
    const retryAfter = Number(refused.headers['retry-after']);
    assert.ok(retryAfter >= 1 && retryAfter <= WINDOW_SECONDS, `Retry-After ${retryAfter}`);

    // The right password does not get through either while the address is refused: no guess is checked.
    assert.equal((await get({})).status, 429);
    const session = await server.request('POST', '/redfish/v1/SessionService/Sessions', {
      auth: { none: true },
      body: { UserName: 'admin', Password: adminPassword },
    });
    assert.equal(session.status, 429);
    const web = await server.request('POST', '/login', {
      auth: { none: true },
      body: { username: 'admin', password: adminPassword },
    });
    assert.equal(web.status, 429);

    // Another client is not affected.
    assert.equal((await get({ localAddress: '127.0.0.2' })).status, 200);

    await sleep(WINDOW_SECONDS * 1000 + 200);
    assert.equal((await get({})).status, 200, 'the window has passed');
  });

  test('a burst of bad guesses at once: no more than the limit are checked', async () => {
    const localAddress = '127.0.0.3';
    const answers = await Promise.all(Array.from({ length: 30 }, () => get({ auth: bad, localAddress })));
    const statuses = answers.map((answer) => answer.status);
    assert.ok(
      statuses.every((status) => status === 401 || status === 429 || status === 503),
      statuses.join(' '),
    );
    // At most four checks run at once (each an scrypt of 32 MiB): the rest are refused without one.
    assert.ok(statuses.includes(503), statuses.join(' '));
    // Guesses refused with 503 (too many checks at once) were not checked and do not count: keep
    // guessing one at a time until refused; all in all no more than the limit were checked.
    let checked = statuses.filter((status) => status === 401).length;
    while ((await get({ auth: bad, localAddress })).status === 401) checked++;
    assert.ok(checked <= MAX_FAILURES, `${checked} guesses were checked`);
  });

  test('an account at its session limit loses its longest-idle session; a full service refuses', async () => {
    const first = await server.login('admin', adminPassword);
    const second = await server.login('admin', adminPassword);
    const third = await server.login('admin', adminPassword);
    const uses = (token: string) => get({ auth: { token } }).then((response) => response.status);
    assert.equal(await uses(second.token), 200);
    assert.equal(await uses(third.token), 200);
    const fourth = await server.login('admin', adminPassword);
    assert.equal(await uses(first.token), 401, 'the longest-idle session made room');
    assert.equal(await uses(fourth.token), 200);
    assert.equal(await uses(second.token), 200);

    const created = await server.request('POST', '/redfish/v1/AccountService/Accounts', {
      body: { UserName: 'operator', Password: 'operator-Passw0rd!', RoleId: 'Operator' },
    });
    assert.equal(created.status, 201);
    await server.login('operator', 'operator-Passw0rd!');
    await server.login('operator', 'operator-Passw0rd!');
    const full = await server.request('POST', '/redfish/v1/SessionService/Sessions', {
      auth: { none: true },
      body: { UserName: 'operator', Password: 'operator-Passw0rd!' },
    });
    assert.equal(full.status, 503);
    assert.deepEqual(messageIds(full), ['SessionLimitExceeded']);
    assert.equal(await uses(fourth.token), 200, 'nobody else was logged out');
  });
});
