import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const vmediaBin = fileURLToPath(new URL('../../bin/vmedia.js', import.meta.url));

interface Running {
  child: ChildProcess;
  output: () => string;
  url: string;
}

/** `vmedia server` as a user runs it, on an ephemeral port, until it prints its ready line. */
async function startCommand(stateDir: string, env: Record<string, string> = {}): Promise<Running> {
  const child = spawn(process.execPath, [vmediaBin, 'server'], {
    env: { ...process.env, VMEDIA_STATE_DIR: stateDir, VMEDIA_PORT: '0', VMEDIA_LOG_LEVEL: 'debug', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const url = await new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const ready = output.split('\n').find((line) => line.includes('ready'));
      const found = ready?.match(/https:\/\/\S+/)?.[0];
      if (found) resolve(found);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`vmedia server exited (${code}):\n${output}`)));
  });
  return { child, output: () => output, url };
}

async function stopCommand(running: Running): Promise<number | null> {
  running.child.kill('SIGTERM');
  const [code] = await once(running.child, 'exit');
  return code as number | null;
}

function get(url: string, ca: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    https
      .get(url, { ca, headers, agent: false }, (res) => {
        let body = '';
        res.on('data', (chunk) => {
          body += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

let stateDir: string;
before(async () => {
  stateDir = await mkdtemp(path.join(os.tmpdir(), 'vmedia-server-command-'));
});
after(() => rm(stateDir, { recursive: true, force: true }));

test('vmedia server: ready line with the URL, a generated admin password printed once and saved 0600, clean SIGTERM', async () => {
  const running = await startCommand(stateDir);
  const printed = running.output().match(/password (\S+)/)?.[1];
  assert.ok(printed, 'password printed');
  const file = path.join(stateDir, 'admin-password');
  assert.equal((await readFile(file, 'utf8')).trim(), printed);
  assert.equal((await stat(file)).mode & 0o777, 0o600);

  const ca = await readFile(path.join(stateDir, 'certs', 'server.crt'), 'utf8');
  const root = await get(`${running.url}/redfish/v1/`, ca);
  assert.equal(root.status, 200);
  assert.equal(JSON.parse(root.body).Id, 'RootService');

  const authorization = `Basic ${Buffer.from(`admin:${printed}`).toString('base64')}`;
  const token = 'deadbeef'.repeat(8);
  assert.equal(
    (await get(`${running.url}/redfish/v1/Managers`, ca, { Authorization: authorization })).status,
    200,
  );
  await get(`${running.url}/redfish/v1/Managers`, ca, {
    'X-Auth-Token': token,
    Cookie: 'SESSION=cookie-secret',
  });

  assert.equal(await stopCommand(running), 0);
  const logs = running
    .output()
    .split('\n')
    .filter((line) => !line.includes('ready') && !line.includes('created user'));
  const text = logs.join('\n');
  assert.ok(text.includes('incoming request'), 'requests are logged');
  for (const secret of [printed, authorization, token, 'cookie-secret']) {
    assert.ok(!text.includes(secret), 'no secret in the logs');
  }
});

test('a second start reuses the accounts and prints no password', async () => {
  const running = await startCommand(stateDir);
  assert.doesNotMatch(running.output(), /password/);
  assert.equal(await stopCommand(running), 0);
});

test('VMEDIA_ADMIN_PASSWORD sets the initial password and no password file is written', async () => {
  const fresh = await mkdtemp(path.join(os.tmpdir(), 'vmedia-server-command-'));
  try {
    const running = await startCommand(fresh, { VMEDIA_ADMIN_PASSWORD: 'given-admin-password' });
    const ca = await readFile(path.join(fresh, 'certs', 'server.crt'), 'utf8');
    const authorization = `Basic ${Buffer.from('admin:given-admin-password').toString('base64')}`;
    assert.equal(
      (await get(`${running.url}/redfish/v1/Managers`, ca, { Authorization: authorization })).status,
      200,
    );
    assert.equal(await stopCommand(running), 0);
    await assert.rejects(stat(path.join(fresh, 'admin-password')));
    assert.ok(!running.output().includes('given-admin-password'));
  } finally {
    await rm(fresh, { recursive: true, force: true });
  }
});
