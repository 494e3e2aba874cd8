import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyRequest } from 'fastify';
import type { Principal } from '../../src/auth/authenticate.ts';
import { xsrfSatisfied } from '../../src/auth/plugin.ts';
import { privilegesOf } from '../../src/auth/privileges.ts';
import { safeEqual } from '../../src/auth/secrets.ts';
import { SessionStore } from '../../src/auth/sessions.ts';
import { adminPassword, startTestServer, type TestServer } from '../helpers/server.ts';

let server: TestServer;
before(async () => {
  server = await startTestServer();
  const created = await server.request('POST', '/redfish/v1/AccountService/Accounts', {
    body: { UserName: 'reader', Password: 'reader-password', RoleId: 'ReadOnly' },
  });
  assert.equal(created.status, 201);
});
after(() => server.close());

const sessionsUri = '/redfish/v1/SessionService/Sessions';
const noAuth = { none: true } as const;

describe('token sessions', () => {
  test('log in: 201, a random hex X-Auth-Token, Location, and the session with UserName', async () => {
    const response = await server.request('POST', sessionsUri, {
      auth: noAuth,
      body: { UserName: 'admin', Password: adminPassword },
    });
    assert.equal(response.status, 201);
    assert.match(String(response.headers['x-auth-token']), /^[0-9a-f]{64}$/);
    assert.equal(response.headers.location, `${sessionsUri}/${response.json.Id}`);
    assert.equal(response.json.UserName, 'admin');
    assert.equal(response.json.Password, null);
    assert.ok(!response.text.includes(String(response.headers['x-auth-token'])), 'token not in the body');
  });

  test('two logins give different tokens and Locations', async () => {
    const one = await server.login('admin', adminPassword);
    const two = await server.login('admin', adminPassword);
    assert.notEqual(one.token, two.token);
    assert.notEqual(one.location, two.location);
  });

  test('a wrong password is 401 with a Basic challenge and nothing echoed', async () => {
    const response = await server.request('POST', sessionsUri, {
      auth: noAuth,
      body: { UserName: 'admin', Password: 'not-the-password' },
    });
    assert.equal(response.status, 401);
    assert.match(String(response.headers['www-authenticate']), /^Basic/);
    assert.ok(!response.text.includes('not-the-password'));
    assert.equal(response.headers['x-auth-token'], undefined);
  });

  test('a login without UserName is 400 naming the property', async () => {
    const response = await server.request('POST', sessionsUri, { auth: noAuth, body: { Password: 'x' } });
    assert.equal(response.status, 400);
    assert.deepEqual(response.json.error['@Message.ExtendedInfo'][0].MessageArgs, ['UserName']);
  });

  test('the token authenticates; an invalid token is 401 and never echoed', async () => {
    const { token, location } = await server.login('admin', adminPassword);
    const own = await server.request('GET', location, { auth: { token } });
    assert.equal(own.status, 200);
    assert.equal(own.json.UserName, 'admin');
    const bogus = 'rfpv0123456789abcdef';
    const refused = await server.request('GET', '/redfish/v1/Managers', { auth: { token: bogus } });
    assert.equal(refused.status, 401);
    assert.ok(!refused.text.includes(bogus));
    assert.ok(!JSON.stringify(refused.headers).includes(bogus));
  });

  test('Authorization: Token <token> works like X-Auth-Token', async () => {
    const { token } = await server.login('admin', adminPassword);
    const response = await server.request('GET', '/redfish/v1/Managers', {
      auth: noAuth,
      headers: { Authorization: `Token ${token}` },
    });
    assert.equal(response.status, 200);
  });

  test('the collection lists sessions; a session is fetched and deleted (logout)', async () => {
    const { token, location } = await server.login('admin', adminPassword);
    const list = await server.request('GET', sessionsUri, { auth: { token } });
    assert.ok(list.json.Members.some((m: { '@odata.id': string }) => m['@odata.id'] === location));
    assert.equal(list.json['Members@odata.count'], list.json.Members.length);
    const deleted = await server.request('DELETE', location, { auth: { token } });
    assert.equal(deleted.status, 204);
    assert.equal((await server.request('GET', '/redfish/v1/Managers', { auth: { token } })).status, 401);
    assert.equal((await server.request('GET', location)).status, 404);
  });

  test("a ReadOnly user sees and ends only their own sessions; an administrator ends anyone's", async () => {
    const admin = await server.login('admin', adminPassword);
    const reader = await server.login('reader', 'reader-password');
    const visible = await server.request('GET', sessionsUri, { auth: { token: reader.token } });
    assert.deepEqual(
      visible.json.Members.map((m: { '@odata.id': string }) => m['@odata.id']),
      [reader.location],
    );
    assert.equal(
      (await server.request('GET', admin.location, { auth: { token: reader.token } })).status,
      403,
    );
    const refused = await server.request('DELETE', admin.location, { auth: { token: reader.token } });
    assert.equal(refused.status, 403);
    assert.equal(refused.json.error.code, 'Base.1.22.1.InsufficientPrivilege');
    assert.equal(
      (await server.request('DELETE', reader.location, { auth: { token: admin.token } })).status,
      204,
    );
  });
});

describe('SessionService', () => {
  test('the timeout defaults to 1800 s and changes through PATCH (ConfigureManager only)', async () => {
    const service = await server.request('GET', '/redfish/v1/SessionService');
    assert.equal(service.json.SessionTimeout, 1800);
    assert.deepEqual(service.json.Sessions, { '@odata.id': sessionsUri });
    const reader = await server.request('PATCH', '/redfish/v1/SessionService', {
      auth: { basic: ['reader', 'reader-password'] },
      body: { SessionTimeout: 600 },
    });
    assert.equal(reader.status, 403);
    const outOfRange = await server.request('PATCH', '/redfish/v1/SessionService', {
      body: { SessionTimeout: 5 },
    });
    assert.equal(outOfRange.status, 400);
    assert.equal(outOfRange.json.error.code, 'Base.1.22.1.PropertyValueOutOfRange');
    const changed = await server.request('PATCH', '/redfish/v1/SessionService', {
      body: { SessionTimeout: 600 },
    });
    assert.equal(changed.status, 200);
    assert.equal(changed.json.SessionTimeout, 600);
    const restored = await server.request('PATCH', '/redfish/v1/SessionService', {
      body: { SessionTimeout: 1800 },
    });
    assert.equal(restored.json.SessionTimeout, 1800);
  });
});

describe('cookie sessions (web UI)', () => {
  const cookiesOf = (setCookie: string | string[] | undefined) =>
    Object.fromEntries([setCookie ?? []].flat().map((c) => [c.split('=')[0], c]));

  async function webLogin(body: unknown) {
    const response = await server.request('POST', '/login', { auth: noAuth, body });
    assert.equal(response.status, 200, response.text);
    const cookies = cookiesOf(response.headers['set-cookie']);
    const session = String(cookies.SESSION).split(';')[0]!.split('=')[1]!;
    const xsrf = String(cookies['XSRF-TOKEN']).split(';')[0]!.split('=')[1]!;
    return { cookies, cookie: `SESSION=${session}; XSRF-TOKEN=${xsrf}`, xsrf };
  }

  test('POST /login sets an HttpOnly, Secure, SameSite=Strict session cookie and a readable XSRF-TOKEN', async () => {
    const { cookies } = await webLogin({ username: 'admin', password: adminPassword });
    assert.match(String(cookies.SESSION), /HttpOnly/);
    assert.match(String(cookies.SESSION), /Secure/);
    assert.match(String(cookies.SESSION), /SameSite=Strict/);
    assert.match(String(cookies['XSRF-TOKEN']), /Secure/);
    assert.doesNotMatch(String(cookies['XSRF-TOKEN']), /HttpOnly/);
  });

  test('bmcweb\'s {"data":[user,password]} form logs in too; a wrong password is 401', async () => {
    await webLogin({ data: ['admin', adminPassword] });
    const wrong = await server.request('POST', '/login', {
      auth: noAuth,
      body: { data: ['admin', 'nope-nope'] },
    });
    assert.equal(wrong.status, 401);
  });

  test('the cookie authenticates GETs; other methods need X-XSRF-TOKEN equal to the session token', async () => {
    const { cookie, xsrf } = await webLogin({ username: 'admin', password: adminPassword });
    const read = await server.request('GET', '/redfish/v1/SessionService', {
      auth: noAuth,
      headers: { Cookie: cookie },
    });
    assert.equal(read.status, 200);
    const body = { SessionTimeout: 1800 };
    const missing = await server.request('PATCH', '/redfish/v1/SessionService', {
      auth: noAuth,
      headers: { Cookie: cookie },
      body,
    });
    assert.equal(missing.status, 403);
    const wrong = await server.request('PATCH', '/redfish/v1/SessionService', {
      auth: noAuth,
      // One hex digit changed: a token already ending in 0 must not pass as the wrong one.
      headers: { Cookie: cookie, 'X-XSRF-TOKEN': `${xsrf.slice(0, -1)}${xsrf.endsWith('0') ? '1' : '0'}` },
      body,
    });
    assert.equal(wrong.status, 403);
    const right = await server.request('PATCH', '/redfish/v1/SessionService', {
      auth: noAuth,
      headers: { Cookie: cookie, 'X-XSRF-TOKEN': xsrf },
      body,
    });
    assert.equal(right.status, 200);
  });

  test('a cookie session token is not accepted as X-Auth-Token (that would bypass the XSRF check)', async () => {
    const { cookie } = await webLogin({ username: 'admin', password: adminPassword });
    const token = cookie.split(';')[0]!.split('=')[1]!;
    assert.equal((await server.request('GET', '/redfish/v1/Managers', { auth: { token } })).status, 401);
  });

  test('POST Sessions with X-Requested-With (webui-vue) answers a cookie session, no token; DELETE logs out', async () => {
    const response = await server.request('POST', '/redfish/v1/SessionService/Sessions', {
      auth: noAuth,
      headers: { 'X-Requested-With': 'XMLHttpRequest' },
      body: { UserName: 'admin', Password: adminPassword },
    });
    assert.equal(response.status, 201, response.text);
    assert.equal(response.headers['x-auth-token'], undefined);
    const location = String(response.headers.location);
    assert.match(location, /^\/redfish\/v1\/SessionService\/Sessions\/[0-9a-f]+$/);
    assert.equal(response.json.SessionType, 'WebUI');
    const cookies = cookiesOf(response.headers['set-cookie']);
    assert.match(String(cookies.SESSION), /HttpOnly/);
    assert.match(String(cookies.SESSION), /SameSite=Strict/);
    assert.doesNotMatch(String(cookies['XSRF-TOKEN']), /HttpOnly/);
    assert.match(String(cookies.IsAuthenticated), /^IsAuthenticated=true;/);
    const value = (name: string) => String(cookies[name]).split(';')[0]!.split('=')[1]!;
    const cookie = `SESSION=${value('SESSION')}; XSRF-TOKEN=${value('XSRF-TOKEN')}`;
    const headers = { Cookie: cookie };
    assert.equal((await server.request('GET', location, { auth: noAuth, headers })).status, 200);
    // A change still needs the XSRF token, however the cookie session was made.
    const noXsrf = await server.request('DELETE', location, { auth: noAuth, headers });
    assert.equal(noXsrf.status, 403);

    const out = await server.request('DELETE', location, {
      auth: noAuth,
      headers: { ...headers, 'X-XSRF-TOKEN': value('XSRF-TOKEN') },
    });
    assert.equal(out.status, 204);
    const cleared = cookiesOf(out.headers['set-cookie']);
    for (const name of ['SESSION', 'XSRF-TOKEN', 'IsAuthenticated']) {
      assert.match(String(cleared[name]), /Expires=Thu, 01 Jan 1970/, name);
    }
    assert.equal(
      (await server.request('GET', '/redfish/v1/Managers', { auth: noAuth, headers })).status,
      401,
    );
  });

  test('POST Sessions without X-Requested-With stays a token session, with no cookie', async () => {
    const response = await server.request('POST', '/redfish/v1/SessionService/Sessions', {
      auth: noAuth,
      body: { UserName: 'admin', Password: adminPassword },
    });
    assert.equal(response.status, 201);
    assert.match(String(response.headers['x-auth-token']), /^[0-9a-f]{64}$/);
    assert.equal(response.headers['set-cookie'], undefined);
  });

  test('POST /logout (with the XSRF token) ends the session and clears the cookies', async () => {
    const { cookie, xsrf } = await webLogin({ username: 'admin', password: adminPassword });
    const out = await server.request('POST', '/logout', {
      auth: noAuth,
      headers: { Cookie: cookie, 'X-XSRF-TOKEN': xsrf },
    });
    assert.equal(out.status, 200);
    assert.match(String(cookiesOf(out.headers['set-cookie']).SESSION), /Expires=Thu, 01 Jan 1970/);
    const after = await server.request('GET', '/redfish/v1/Managers', {
      auth: noAuth,
      headers: { Cookie: cookie },
    });
    assert.equal(after.status, 401);
  });
});

describe('XSRF for WebSockets', () => {
  const cookiePrincipal: Principal = {
    username: 'admin',
    roleId: 'Administrator',
    privileges: privilegesOf('Administrator'),
    session: { id: 's', kind: 'cookie', xsrfToken: 'abc123' },
  };
  const upgrade = (protocol?: string) =>
    ({
      method: 'GET',
      headers: { upgrade: 'websocket', ...(protocol ? { 'sec-websocket-protocol': protocol } : {}) },
    }) as unknown as FastifyRequest;

  test('a cookie-session upgrade must offer the XSRF token as a subprotocol', () => {
    assert.equal(xsrfSatisfied(upgrade('abc123'), cookiePrincipal), true);
    assert.equal(xsrfSatisfied(upgrade('binary, abc123'), cookiePrincipal), true);
    assert.equal(xsrfSatisfied(upgrade('abc124'), cookiePrincipal), false);
    assert.equal(xsrfSatisfied(upgrade(), cookiePrincipal), false);
  });

  test('token sessions and Basic need no XSRF token', () => {
    const { session: _, ...basic } = cookiePrincipal;
    assert.equal(xsrfSatisfied(upgrade(), basic), true);
  });

  test('safeEqual compares whole strings of any length', () => {
    assert.equal(safeEqual('abc', 'abc'), true);
    assert.equal(safeEqual('abc', 'abd'), false);
    assert.equal(safeEqual('abc', 'abcd'), false);
    assert.equal(safeEqual('', ''), true);
  });
});

describe('idle timeout', () => {
  test('a session expires after the timeout without use, and each use restarts the clock', () => {
    let now = 0;
    const store = new SessionStore(
      () => 60,
      () => now,
    );
    const session = store.create('admin', 'token', '127.0.0.1');
    now = 59_000;
    assert.ok(store.use(session.token));
    now = 118_000;
    assert.ok(store.use(session.token), 'used 59 s ago');
    now = 178_001;
    assert.equal(store.use(session.token), undefined);
    assert.deepEqual(store.list(), []);
  });
});
