import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AccountStore } from '../../src/auth/accounts.ts';
import { adminPassword, startTestServer, type TestServer } from '../helpers/server.ts';

let server: TestServer;
before(async () => {
  server = await startTestServer();
});
after(() => server.close());

const accountsUri = '/redfish/v1/AccountService/Accounts';
const basic = (user: string, password: string) => ({ basic: [user, password] as [string, string] });

async function createAccount(UserName: string, RoleId: string, Password = `${UserName}-password`) {
  const response = await server.request('POST', accountsUri, { body: { UserName, Password, RoleId } });
  assert.equal(response.status, 201, response.text);
  return response;
}

describe('roles', () => {
  test('Administrator, Operator and ReadOnly carry the DMTF privilege sets', async () => {
    const collection = await server.request('GET', '/redfish/v1/AccountService/Roles');
    assert.equal(collection.json['Members@odata.count'], 3);
    const expected = {
      Administrator: ['Login', 'ConfigureManager', 'ConfigureUsers', 'ConfigureComponents', 'ConfigureSelf'],
      Operator: ['Login', 'ConfigureComponents', 'ConfigureSelf'],
      ReadOnly: ['Login', 'ConfigureSelf'],
    };
    for (const [id, privileges] of Object.entries(expected)) {
      const role = await server.request('GET', `/redfish/v1/AccountService/Roles/${id}`);
      assert.deepEqual([...role.json.AssignedPrivileges].sort(), [...privileges].sort(), id);
      assert.equal(role.json.RoleId, id);
      assert.equal(role.json.IsPredefined, true);
    }
    assert.equal((await server.request('GET', '/redfish/v1/AccountService/Roles/Root')).status, 404);
  });
});

describe('accounts', () => {
  test('create: 201 with Location; the account logs in with its role', async () => {
    const created = await createAccount('oper', 'Operator');
    assert.equal(created.headers.location, `${accountsUri}/oper`);
    assert.equal(created.json.RoleId, 'Operator');
    assert.equal(created.json.Password, null);
    assert.deepEqual(created.json.Links.Role, { '@odata.id': '/redfish/v1/AccountService/Roles/Operator' });
    const read = await server.request('GET', '/redfish/v1/Managers', {
      auth: basic('oper', 'oper-password'),
    });
    assert.equal(read.status, 200);
  });

  test('a duplicate, a bad role, a short password or an unknown property is refused; no password echoed', async () => {
    await createAccount('dup', 'ReadOnly');
    const duplicate = await server.request('POST', accountsUri, {
      body: { UserName: 'dup', Password: 'whatever-pass', RoleId: 'ReadOnly' },
    });
    assert.equal(duplicate.status, 409);
    assert.equal(duplicate.json.error.code, 'Base.1.22.1.ResourceAlreadyExists');
    const role = await server.request('POST', accountsUri, {
      body: { UserName: 'x1', Password: 'whatever-pass', RoleId: 'Root' },
    });
    assert.equal(role.status, 400);
    assert.equal(role.json.error.code, 'Base.1.22.1.PropertyValueNotInList');
    const short = await server.request('POST', accountsUri, {
      body: { UserName: 'x2', Password: 'Sh0rt!', RoleId: 'ReadOnly' },
    });
    assert.equal(short.status, 400);
    assert.ok(!short.text.includes('Sh0rt!'));
    const typed = await server.request('POST', accountsUri, {
      body: { UserName: 'x3', Password: 12345678901, RoleId: 'ReadOnly' },
    });
    assert.equal(typed.status, 400);
    assert.ok(!typed.text.includes('12345678901'));
    const unknown = await server.request('POST', accountsUri, {
      body: { UserName: 'x4', Password: 'whatever-pass', RoleId: 'ReadOnly', Shoe: 1 },
    });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.json.error.code, 'Base.1.22.1.PropertyUnknown');
    const missing = await server.request('POST', accountsUri, {
      body: { UserName: 'x5', Password: 'whatever-pass' },
    });
    assert.equal(missing.status, 400);
  });

  test('only ConfigureUsers creates accounts (403 InsufficientPrivilege otherwise)', async () => {
    await createAccount('oper2', 'Operator');
    const response = await server.request('POST', accountsUri, {
      auth: basic('oper2', 'oper2-password'),
      body: { UserName: 'sneaky', Password: 'sneaky-password', RoleId: 'Administrator' },
    });
    assert.equal(response.status, 403);
    assert.equal(response.json.error.code, 'Base.1.22.1.InsufficientPrivilege');
  });

  test('GET carries an ETag; PATCH with a stale If-Match is 412, with the current one it applies', async () => {
    await createAccount('etag', 'ReadOnly');
    const before = await server.request('GET', `${accountsUri}/etag`);
    const etag = String(before.headers.etag);
    assert.match(etag, /^(W\/)?"[^"]+"$/);
    const stale = await server.request('PATCH', `${accountsUri}/etag`, {
      headers: { 'If-Match': '"not-the-etag"' },
      body: { RoleId: 'Operator' },
    });
    assert.equal(stale.status, 412);
    assert.equal(stale.json.error.code, 'Base.1.22.1.PreconditionFailed');
    const fresh = await server.request('PATCH', `${accountsUri}/etag`, {
      headers: { 'If-Match': etag },
      body: { RoleId: 'Operator' },
    });
    assert.equal(fresh.status, 200);
    assert.equal(fresh.json.RoleId, 'Operator');
    const afterwards = await server.request('GET', `${accountsUri}/etag`);
    assert.notEqual(afterwards.headers.etag, etag);
    const old = await server.request('PATCH', `${accountsUri}/etag`, {
      headers: { 'If-Match': etag },
      body: { Enabled: false },
    });
    assert.equal(old.status, 412);
  });

  test("ConfigureSelf: a user changes their own password, nothing else, and no one else's", async () => {
    await createAccount('self', 'ReadOnly');
    await createAccount('other', 'ReadOnly');
    const self = basic('self', 'self-password');
    const collection = await server.request('GET', accountsUri, { auth: self });
    assert.deepEqual(collection.json.Members, [{ '@odata.id': `${accountsUri}/self` }]);
    assert.equal((await server.request('GET', `${accountsUri}/other`, { auth: self })).status, 403);
    const role = await server.request('PATCH', `${accountsUri}/self`, {
      auth: self,
      body: { RoleId: 'Administrator' },
    });
    assert.equal(role.status, 403);
    const others = await server.request('PATCH', `${accountsUri}/other`, {
      auth: self,
      body: { Password: 'taken-over-1' },
    });
    assert.equal(others.status, 403);
    const own = await server.request('PATCH', `${accountsUri}/self`, {
      auth: self,
      body: { Password: 'new-self-pass' },
    });
    assert.equal(own.status, 200);
    assert.ok(!own.text.includes('new-self-pass'));
    assert.equal((await server.request('GET', '/redfish/v1/Managers', { auth: self })).status, 401);
    assert.equal(
      (await server.request('GET', '/redfish/v1/Managers', { auth: basic('self', 'new-self-pass') })).status,
      200,
    );
  });

  test("a password change ends the account's other sessions", async () => {
    await createAccount('moved', 'Operator');
    const { token } = await server.login('moved', 'moved-password');
    const patched = await server.request('PATCH', `${accountsUri}/moved`, {
      body: { Password: 'moved-password-2' },
    });
    assert.equal(patched.status, 200);
    assert.equal((await server.request('GET', '/redfish/v1/Managers', { auth: { token } })).status, 401);
  });

  test('a disabled account cannot log in; deleting an account ends its sessions', async () => {
    await createAccount('gone', 'ReadOnly');
    const { token } = await server.login('gone', 'gone-password');
    const disabled = await server.request('PATCH', `${accountsUri}/gone`, { body: { Enabled: false } });
    assert.equal(disabled.json.Enabled, false);
    assert.equal(
      (await server.request('GET', '/redfish/v1/Managers', { auth: basic('gone', 'gone-password') })).status,
      401,
    );
    await server.request('PATCH', `${accountsUri}/gone`, { body: { Enabled: true } });
    const again = await server.login('gone', 'gone-password');
    assert.equal((await server.request('DELETE', `${accountsUri}/gone`)).status, 204);
    assert.equal(
      (await server.request('GET', '/redfish/v1/Managers', { auth: { token: again.token } })).status,
      401,
    );
    assert.equal((await server.request('GET', `${accountsUri}/gone`)).status, 404);
    assert.equal(token.length, 64);
  });

  test('the last enabled Administrator can be neither deleted, disabled nor demoted', async () => {
    assert.equal((await server.request('DELETE', `${accountsUri}/admin`)).status, 409);
    assert.equal(
      (await server.request('PATCH', `${accountsUri}/admin`, { body: { Enabled: false } })).status,
      400,
    );
    assert.equal(
      (await server.request('PATCH', `${accountsUri}/admin`, { body: { RoleId: 'ReadOnly' } })).status,
      400,
    );
    assert.equal((await server.request('GET', `${accountsUri}/admin`)).json.RoleId, 'Administrator');
  });

  test('accounts persist in accounts.json (0600) as scrypt hashes, across restarts', async () => {
    await createAccount('kept', 'Operator', 'kept-secret-password');
    const file = path.join(server.stateDir, 'accounts.json');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const text = await readFile(file, 'utf8');
    assert.ok(!text.includes('kept-secret-password'));
    assert.ok(!text.includes(adminPassword));
    assert.match(text, /"passwordHash": "scrypt\$/);
    const again = await startTestServer({ stateDir: server.stateDir, adminPassword: 'ignored-now-1' });
    try {
      const read = await again.request('GET', '/redfish/v1/Managers', {
        auth: basic('kept', 'kept-secret-password'),
      });
      assert.equal(read.status, 200);
      assert.equal(
        (await again.request('GET', '/redfish/v1/Managers')).status,
        200,
        'admin kept its password',
      );
    } finally {
      await again.close();
    }
  });
});

describe('lockout', () => {
  test('repeated failures lock the account (even for the right password) until an administrator unlocks it', async () => {
    await createAccount('locky', 'ReadOnly');
    const policy = await server.request('PATCH', '/redfish/v1/AccountService', {
      body: { AccountLockoutThreshold: 3, AccountLockoutDuration: 600, AccountLockoutCounterResetAfter: 600 },
    });
    assert.equal(policy.status, 200);
    assert.equal(policy.json.AccountLockoutThreshold, 3);
    for (let attempt = 0; attempt < 3; attempt++) {
      const wrong = await server.request('GET', '/redfish/v1/Managers', {
        auth: basic('locky', 'wrong-password'),
      });
      assert.equal(wrong.status, 401);
    }
    const right = await server.request('GET', '/redfish/v1/Managers', {
      auth: basic('locky', 'locky-password'),
    });
    assert.equal(right.status, 401, 'locked');
    assert.equal((await server.request('GET', `${accountsUri}/locky`)).json.Locked, true);
    const locking = await server.request('PATCH', `${accountsUri}/locky`, { body: { Locked: true } });
    assert.equal(locking.status, 400, 'only unlocking can be written');
    const unlocked = await server.request('PATCH', `${accountsUri}/locky`, { body: { Locked: false } });
    assert.equal(unlocked.json.Locked, false);
    assert.equal(
      (await server.request('GET', '/redfish/v1/Managers', { auth: basic('locky', 'locky-password') }))
        .status,
      200,
    );
  });

  test('the policy is validated: min ≤ max length, counter window within the lockout duration', async () => {
    const lengths = await server.request('PATCH', '/redfish/v1/AccountService', {
      body: { MinPasswordLength: 99 },
    });
    assert.equal(lengths.status, 400);
    const window = await server.request('PATCH', '/redfish/v1/AccountService', {
      body: { AccountLockoutDuration: 30, AccountLockoutCounterResetAfter: 60 },
    });
    assert.equal(window.status, 400);
  });

  test('the lock lifts after AccountLockoutDuration; the failure count resets after the window', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vmedia-accounts-'));
    try {
      const file = path.join(dir, 'accounts.json');
      await AccountStore.create(file, { username: 'admin', password: 'admin-password' });
      let now = 1_000_000;
      const store = await AccountStore.open(file, () => now);
      await store.setPolicy({ lockoutThreshold: 2, lockoutDuration: 300, lockoutCounterResetAfter: 60 });
      assert.equal(await store.verify('admin', 'bad'), undefined);
      now += 61_000;
      assert.equal(await store.verify('admin', 'bad'), undefined);
      assert.ok(
        await store.verify('admin', 'admin-password'),
        'first failure was forgotten after the window',
      );
      assert.equal(await store.verify('admin', 'bad'), undefined);
      assert.equal(await store.verify('admin', 'bad'), undefined);
      assert.equal(store.get('admin')?.locked, true);
      now += 299_000;
      assert.equal(await store.verify('admin', 'admin-password'), undefined, 'still locked');
      now += 2_000;
      assert.equal(store.get('admin')?.locked, false);
      assert.ok(await store.verify('admin', 'admin-password'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a lockout and a running failure count survive a restart of the server', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vmedia-accounts-'));
    try {
      const file = path.join(dir, 'accounts.json');
      await AccountStore.create(file, { username: 'admin', password: 'admin-password' });
      let now = 1_000_000;
      const first = await AccountStore.open(file, () => now);
      await first.setPolicy({ lockoutThreshold: 2, lockoutDuration: 300, lockoutCounterResetAfter: 60 });
      await first.create({
        username: 'counting',
        password: 'counting-password',
        roleId: 'ReadOnly',
        enabled: true,
      });
      assert.equal(await first.verify('admin', 'bad'), undefined);
      assert.equal(await first.verify('admin', 'bad'), undefined);
      assert.equal(await first.verify('counting', 'bad'), undefined);

      const second = await AccountStore.open(file, () => now);
      assert.equal(second.get('admin')?.locked, true, 'still locked after the restart');
      assert.equal(await second.verify('admin', 'admin-password'), undefined);
      assert.equal(await second.verify('counting', 'bad'), undefined, 'the second failure in the window');
      assert.equal(second.get('counting')?.locked, true, 'the count went on where it was');
      now += 301_000;
      assert.ok(await second.verify('admin', 'admin-password'), 'the lock lifts on time');
      const text = await readFile(file, 'utf8');
      assert.ok(!text.includes('admin-password') && !text.includes('"bad"'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
