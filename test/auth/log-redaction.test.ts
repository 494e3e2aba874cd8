import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger } from '../../src/log.ts';
import { adminPassword, startTestServer } from '../helpers/server.ts';

/** A pino destination that keeps every line, so the test can search the whole log. */
function capture(): { stream: Writable; text: () => string } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { stream, text: () => lines.join('') };
}

test('no password, token, cookie or XSRF token reaches the log, even at trace level', async () => {
  const log = capture();
  const server = await startTestServer({ logger: createLogger('redaction', 'trace', log.stream) });
  const secrets = [adminPassword, 'wrong-Passw0rd-guess', 'New-Passw0rd-for-ops'];
  try {
    await server.request('GET', '/redfish/v1/Managers/bmc');
    await server.request('GET', '/redfish/v1/Managers/bmc', { auth: { basic: ['admin', secrets[1]!] } });
    const { token } = await server.login('admin', adminPassword);
    secrets.push(token);
    await server.request('GET', '/redfish/v1/SessionService/Sessions', { auth: { token } });
    await server.request('GET', '/redfish/v1/SessionService/Sessions', { auth: { token: 'f00d'.repeat(8) } });
    const created = await server.request('POST', '/redfish/v1/AccountService/Accounts', {
      body: { UserName: 'ops', Password: secrets[2], RoleId: 'Operator' },
    });
    assert.equal(created.status, 201);
    const web = await server.request('POST', '/login', {
      auth: { none: true },
      body: { username: 'admin', password: adminPassword },
    });
    const cookies = ([] as string[]).concat(web.headers['set-cookie'] ?? []).map((c) => c.split(';')[0]!);
    assert.ok(cookies.length >= 2, 'session and XSRF cookies');
    for (const cookie of cookies) secrets.push(cookie.slice(cookie.indexOf('=') + 1));
    await server.request('GET', '/redfish/v1/Managers/bmc', {
      auth: { none: true },
      headers: { Cookie: cookies.join('; ') },
    });
    // What our own code might log: a request's headers, a parsed body, a credentials object.
    createLogger('redaction', 'trace', log.stream).info(
      {
        req: {
          headers: { authorization: `Basic ${adminPassword}`, 'x-auth-token': token, cookie: cookies[0] },
        },
        headers: { 'sec-websocket-protocol': cookies[1] },
        body: { Password: adminPassword },
        credentials: { user: 'admin', password: adminPassword },
      },
      'explicit',
    );
  } finally {
    await server.close();
  }
  const text = log.text();
  assert.match(text, /"explicit"/);
  assert.match(text, /\[redacted\]/);
  for (const secret of secrets)
    assert.equal(text.includes(secret), false, `a secret reached the log: ${secret}`);
});
