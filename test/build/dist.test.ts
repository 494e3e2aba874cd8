/**
 * `npm run build`: the bundle runs where nothing else is — copied to a folder with no node_modules up its
 * path, started with plain `node` (no tsx) — and serves the API, the prebuilt web UI and a Legacy insert
 * whose credentials travel as a Unix fd (through the usocket addon copied into the bundle). Without that
 * addon the stack still starts; only fd passing is lost.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { startImageServer } from '../helpers/https-image-server.ts';
import { createTestCertificates } from '../helpers/test-ca.ts';
import { waitFor } from '../helpers/wait.ts';

const run = promisify(execFile);
const repo = path.resolve('.');
const adminPassword = 'dist-test-Passw0rd';
const imageCredentials = { user: 'images', password: 'S3cret-image-päss' };
const collectionUri = '/redfish/v1/Managers/bmc/VirtualMedia';

interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: () => Record<string, unknown>;
}

function request(
  base: string,
  method: string,
  uri: string,
  options: { auth?: boolean; body?: unknown } = {},
): Promise<Response> {
  const body = options.body === undefined ? undefined : JSON.stringify(options.body);
  return new Promise((resolve, reject) => {
    const req = https.request(
      new URL(uri, base),
      {
        method,
        rejectUnauthorized: false, // the generated self-signed certificate; TLS has tests of its own
        headers: {
          accept: '*/*',
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...(options.auth
            ? { authorization: `Basic ${Buffer.from(`admin:${adminPassword}`).toString('base64')}` }
            : {}),
        },
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          text += chunk;
        });
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            text,
            json: () => JSON.parse(text),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Processes whose command line mentions `needle` (every child of the stack carries the state dir). */
async function processesMentioning(needle: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await fs.readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(needle)) found.push(Number(entry));
  }
  return found;
}

/** The environment of a process that must find nothing of the repository: no tsx, no module paths. */
function bareEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const { NODE_OPTIONS: _options, NODE_PATH: _path, ...env } = process.env;
  return { ...env, ...extra };
}

interface Stack {
  child: ChildProcess;
  url: string;
  stateDir: string;
  output: () => string;
  stop(): Promise<number | null>;
  dispose(): Promise<void>;
}

/** `node <dist>/vmedia.mjs start` on a free port in a fresh state dir; resolves once it is ready. */
async function startStack(dist: string, env: Record<string, string>): Promise<Stack> {
  const stateDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-dist-state-'));
  const child = spawn(process.execPath, [path.join(dist, 'vmedia.mjs'), 'start'], {
    cwd: stateDir,
    env: bareEnv({
      VMEDIA_STATE_DIR: stateDir,
      VMEDIA_PORT: '0',
      VMEDIA_ADMIN_PASSWORD: adminPassword,
      ...env,
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  const dispose = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const pid of await processesMentioning(stateDir)) process.kill(pid, 'SIGKILL');
    await fs.rm(stateDir, { recursive: true, force: true });
  };
  try {
    const url = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        output += `${line}\n`;
        const match = line.match(/^vmedia ready: (https:\/\/\S+)/);
        if (match) resolve(match[1]!);
      });
      child.once('exit', (code) => reject(new Error(`vmedia start exited with ${code}:\n${output}`)));
      setTimeout(() => reject(new Error(`vmedia start was not ready in 20 s:\n${output}`)), 20_000).unref();
    });
    return {
      child,
      url,
      stateDir,
      output: () => output,
      async stop() {
        child.kill('SIGINT');
        const [code] = await once(child, 'exit');
        return code as number | null;
      },
      dispose,
    };
  } catch (error) {
    await dispose();
    throw error;
  }
}

/** POSTs a Legacy InsertMedia; answers its outcome: the answer itself, or after a 202 the task's end. */
async function insert(stack: Stack, slot: string, body: Record<string, unknown>): Promise<Response> {
  const accepted = await request(
    stack.url,
    'POST',
    `${collectionUri}/${slot}/Actions/VirtualMedia.InsertMedia`,
    {
      auth: true,
      body,
    },
  );
  if (accepted.status !== 202) return accepted;
  const monitor = String(accepted.headers.location);
  return waitFor(
    async () => {
      const response = await request(stack.url, 'GET', monitor, { auth: true });
      return response.status !== 202 && response;
    },
    { what: `task ${monitor} to finish`, timeoutMs: 20_000, intervalMs: 100 },
  );
}

describe('the bundle in dist/', { timeout: 90_000 }, () => {
  let buildDir: string;
  let deployDir: string;
  let dist: string;
  let certDir: string;
  let images: Awaited<ReturnType<typeof startImageServer>>;
  let caBundle: string;
  let imageUrl: string;
  const image = Buffer.alloc(1024 * 1024, 0x5a);

  before(async () => {
    buildDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-build-'));
    const { stdout } = await run(
      process.execPath,
      ['--import', 'tsx', 'scripts/build.ts', '--outdir', buildDir],
      {
        cwd: repo,
      },
    );
    assert.match(stdout, /^built .* in all\b/m);
    // Deployed by copying, somewhere no node_modules of the repository (or above) can be found.
    deployDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-deploy-'));
    dist = path.join(deployDir, 'vmedia');
    await fs.cp(buildDir, dist, { recursive: true });
    for (let dir = dist; dir !== path.dirname(dir); dir = path.dirname(dir)) {
      await assert.rejects(
        fs.access(path.join(path.dirname(dir), 'node_modules')),
        `node_modules beside ${dir}`,
      );
    }

    certDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-dist-certs-'));
    const certificates = await createTestCertificates(certDir);
    caBundle = certificates.caCertFile;
    images = await startImageServer({
      certificates,
      images: { '/disk.img': image },
      credentials: imageCredentials,
    });
    imageUrl = `${images.origin}/disk.img`;
  });

  after(async () => {
    await images?.close();
    for (const dir of [buildDir, deployDir, certDir])
      if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  test('the layout: one entry, the SMB plugin, the prebuilt UI, the addons; no esbuild, no tsx', async () => {
    const entries = await fs.readdir(dist);
    assert.ok(entries.includes('vmedia.mjs'));
    assert.ok(entries.includes('smb-plugin.py'), 'the userspace CIFS plugin is beside the bundle');
    assert.deepEqual((await fs.readdir(path.join(dist, 'web'))).sort(), [
      'app.css',
      'app.css.map',
      'app.js',
      'app.js.map',
      'favicon.svg',
      'index.html',
    ]);
    assert.deepEqual((await fs.readdir(path.join(dist, 'node_modules'))).sort(), ['bufferutil', 'usocket']);
    for (const file of entries.filter((name) => name.endsWith('.mjs'))) {
      const code = await fs.readFile(path.join(dist, file), 'utf8');
      assert.doesNotMatch(code, /from\s*"esbuild"|import\("esbuild"\)|\btsx\/esm\b/, file);
    }
  });

  test('vmedia --help and vmedia start --help', async () => {
    const help = await run(process.execPath, [path.join(dist, 'vmedia.mjs'), '--help'], {
      cwd: deployDir,
      env: bareEnv({}),
    });
    assert.match(help.stderr, /^usage: vmedia <command>/);
    assert.match(help.stderr, /^ {2}start +run the embedded stack/m);
    const start = await run(process.execPath, [path.join(dist, 'vmedia.mjs'), 'start', '--help'], {
      cwd: deployDir,
      env: bareEnv({}),
    });
    assert.match(start.stdout, /^usage: vmedia start \[--bus private\|system\]/);
  });

  test('vmedia start: Redfish, the web UI, a Legacy insert with credentials (fd passing), a clean stop', async () => {
    const stack = await startStack(dist, { VMEDIA_CA_BUNDLE: caBundle });
    try {
      const root = await request(stack.url, 'GET', '/redfish/v1/');
      assert.equal(root.status, 200);
      assert.match(String(root.json()['@odata.id']), /^\/redfish\/v1\/?$/);

      assert.equal((await request(stack.url, 'GET', collectionUri)).status, 401);
      const collection = await request(stack.url, 'GET', collectionUri, { auth: true });
      assert.equal(collection.status, 200, collection.text);
      assert.equal(collection.json()['Members@odata.count'], 4);

      const page = await request(stack.url, 'GET', '/');
      assert.equal(page.status, 200);
      assert.match(String(page.headers['content-type']), /^text\/html/);
      const script = page.text.match(/<script type="module" src="([^"]+)"/)?.[1];
      assert.equal(script, '/app.js');
      const js = await request(stack.url, 'GET', script);
      assert.equal(js.status, 200);
      assert.match(String(js.headers['content-type']), /^text\/javascript/);
      assert.equal(js.text, await fs.readFile(path.join(dist, 'web/app.js'), 'utf8'));
      assert.equal((await request(stack.url, 'GET', '/app.css')).status, 200);
      assert.equal((await request(stack.url, 'GET', '/favicon.svg')).status, 200);

      // The service answers Introspect (xml2js, which the bundle loads only when first asked).
      const busAddress = (await fs.readFile(path.join(stack.stateDir, 'dbus-address'), 'utf8')).trim();
      const introspection = await run('dbus-send', [
        `--bus=${busAddress}`,
        '--print-reply=literal',
        '--dest=xyz.openbmc_project.VirtualMedia',
        '/xyz/openbmc_project/VirtualMedia/Legacy/Slot_2',
        'org.freedesktop.DBus.Introspectable.Introspect',
      ]);
      assert.match(introspection.stdout, /<interface name="xyz\.openbmc_project\.VirtualMedia\.Legacy">/);

      // The image password reaches the service through a pipe whose fd rides on D-Bus: usocket's job.
      const final = await insert(stack, 'Slot_2', {
        Image: imageUrl,
        UserName: imageCredentials.user,
        Password: imageCredentials.password,
      });
      assert.equal(final.status, 204, final.text);
      const slot = (await request(stack.url, 'GET', `${collectionUri}/Slot_2`, { auth: true })).json();
      assert.equal(slot.Inserted, true);
      assert.equal(slot.Image, imageUrl);
      assert.ok(
        images.requests.some((r) => r.authorized),
        JSON.stringify(images.requests),
      );

      assert.equal(await stack.stop(), 0, stack.output());
      assert.deepEqual(await processesMentioning(stack.stateDir), []);
    } finally {
      await stack.dispose();
    }
  });

  test('without the native addons the stack still starts; only fd passing (Legacy credentials) is lost', async () => {
    const bare = path.join(deployDir, 'bare');
    await fs.cp(dist, bare, { recursive: true });
    await fs.rm(path.join(bare, 'node_modules'), { recursive: true });
    const stack = await startStack(bare, { VMEDIA_CA_BUNDLE: caBundle });
    try {
      const collection = await request(stack.url, 'GET', collectionUri, { auth: true });
      assert.equal(collection.json()['Members@odata.count'], 4);
      assert.equal((await request(stack.url, 'GET', '/app.js')).status, 200);

      // dbus-next cannot send the credentials fd over a plain net.Socket: the call fails (today after the
      // D-Bus call times out, as a 503) and the server reconnects to the bus.
      const refused = await request(
        stack.url,
        'POST',
        `${collectionUri}/Slot_2/Actions/VirtualMedia.InsertMedia`,
        {
          auth: true,
          body: { Image: imageUrl, UserName: imageCredentials.user, Password: imageCredentials.password },
        },
      );
      assert.ok(refused.status >= 400, `${refused.status} ${refused.text}`);
      const slot = await waitFor(
        async () => {
          const response = await request(stack.url, 'GET', `${collectionUri}/Slot_2`, { auth: true });
          return response.status === 200 && response.json();
        },
        { what: 'the server to answer again', timeoutMs: 10_000, intervalMs: 200 },
      );
      assert.equal(slot.Inserted, false);

      assert.equal(await stack.stop(), 0, stack.output());
      assert.deepEqual(await processesMentioning(stack.stateDir), []);
    } finally {
      await stack.dispose();
    }
  });
});
