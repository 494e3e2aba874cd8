import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { adminPassword } from '../helpers/server.ts';

const run = promisify(execFile);
const sushyDriver = fileURLToPath(new URL('./sushy-driver.py', import.meta.url));

/**
 * DMTF redfishtool (Debian package) against the server at `serverUrl` as admin, with a session
 * (`-S Always`); answers what it printed on stdout and stderr.
 */
export function redfishtool(serverUrl: string): (...args: string[]) => Promise<string> {
  const host = new URL(serverUrl).host;
  return async (...args) => {
    const { stdout, stderr } = await run('redfishtool', [
      '-r',
      host,
      '-u',
      'admin',
      '-p',
      adminPassword,
      '-S',
      'Always',
      ...args,
    ]);
    return stdout + stderr;
  };
}

/**
 * sushy-driver.py under Debian's /usr/bin/python3 (where python3-sushy is), the admin password on
 * stdin; answers the one JSON object it prints.
 */
export function runSushy(
  serverUrl: string,
  args: string[],
  timeoutMs = 60_000,
  // biome-ignore lint/suspicious/noExplicitAny: the driver's JSON is inspected freely.
): Promise<Record<string, any>> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      '/usr/bin/python3',
      [sushyDriver, serverUrl, ...args],
      {
        env: { PATH: '/usr/bin:/bin', PYTHONDONTWRITEBYTECODE: '1', NO_PROXY: '127.0.0.1' },
        timeout: timeoutMs,
      },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`sushy ${args.join(' ')}: ${stdout}${stderr}`, { cause: error }));
        else resolve(JSON.parse(stdout));
      },
    );
    child.stdin!.end(`${adminPassword}\n`);
  });
}
