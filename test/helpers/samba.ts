import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freeLoopbackPort } from './ports.ts';
import { recordSecret } from './run-logs.ts';
import { waitFor } from './wait.ts';

const run = promisify(execFile);

export interface SambaOptions {
  /** TCP port on loopback (an unprivileged one; SMB's own 445 needs root and may be taken). */
  port: number;
  /** `server smb encrypt`: `required` for the shares under test, `off` for a server that cannot encrypt. */
  encrypt: 'required' | 'off';
  user: string;
  /** Share name → folder it serves. */
  shares: Record<string, string>;
  /** Shares clients may write to (every other is read-only). */
  writable?: string[];
}

/**
 * Everything a real smbd needs to run unprivileged-ish in `dir` and nowhere else: smb.conf (loopback only,
 * SMB3 only, no NetBIOS, no printers, every state folder under `dir`) and the passwd/group files
 * nss_wrapper shows smbd instead of /etc/passwd, so the test user exists for Samba without touching the
 * machine's accounts. Plain data, so a test can write the same files into a VM guest.
 */
export function sambaFiles(
  dir: string,
  options: SambaOptions,
): { files: Record<string, string>; env: Record<string, string> } {
  const shares = Object.entries(options.shares)
    .map(
      ([name, folder]) =>
        `[${name}]\npath = ${folder}\nread only = ${options.writable?.includes(name) ? 'no' : 'yes'}\n` +
        `valid users = ${options.user}\nforce user = ${options.user}\n`,
    )
    .join('\n');
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const conf = `[global]
server role = standalone server
smb ports = ${options.port}
interfaces = lo
bind interfaces only = yes
disable netbios = yes
server min protocol = SMB3
server smb encrypt = ${options.encrypt}
map to guest = never
load printers = no
printing = bsd
printcap name = /dev/null
disable spoolss = yes
private dir = ${dir}/private
lock directory = ${dir}/lock
state directory = ${dir}/state
cache directory = ${dir}/cache
pid directory = ${dir}/run
ncalrpc dir = ${dir}/ncalrpc
log file = ${dir}/log/smbd.log
log level = 1

${shares}`;
  return {
    files: {
      [`${dir}/smb.conf`]: conf,
      [`${dir}/passwd`]: `root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n${options.user}:x:${uid}:${gid}:${options.user}:${dir}:/bin/false\n`,
      [`${dir}/group`]: `root:x:0:\nnogroup:x:65534:\n`,
    },
    env: {
      NSS_WRAPPER_PASSWD: `${dir}/passwd`,
      NSS_WRAPPER_GROUP: `${dir}/group`,
      LD_PRELOAD: 'libnss_wrapper.so',
    },
  };
}

/** The folders smb.conf names, created before smbd starts. */
export const SAMBA_FOLDERS = ['private', 'lock', 'state', 'cache', 'run', 'ncalrpc', 'log'];

export interface SambaServer {
  port: number;
  dir: string;
  /** `smbstatus -b`'s session table: one row per client session, with its dialect and encryption. */
  sessions(): Promise<{ protocol: string; encryption: string }[]>;
  log(): Promise<string>;
  stop(): Promise<void>;
}

/** A real Debian smbd on 127.0.0.1/::1, the test user's password set with smbpasswd. */
export async function startSamba(
  options: Omit<SambaOptions, 'port'> & { password: string },
): Promise<SambaServer> {
  recordSecret(options.password);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-samba-'));
  const port = await freeLoopbackPort();
  const { files, env } = sambaFiles(dir, { ...options, port });
  await Promise.all(SAMBA_FOLDERS.map((folder) => fs.mkdir(path.join(dir, folder), { recursive: true })));
  await Promise.all(Object.entries(files).map(([file, text]) => fs.writeFile(file, text)));
  const childEnv = { ...process.env, ...env };
  const conf = `${dir}/smb.conf`;
  await new Promise<void>((resolve, reject) => {
    const child = execFile('smbpasswd', ['-c', conf, '-s', '-a', options.user], { env: childEnv }, (error) =>
      error ? reject(error) : resolve(),
    );
    child.stdin!.end(`${options.password}\n${options.password}\n`);
  });

  // Its own process group, so stop() also ends the per-client smbd children.
  const smbd: ChildProcess = spawn('smbd', ['--foreground', '--no-process-group', '-s', conf], {
    env: childEnv,
    stdio: 'ignore',
    detached: true,
  });
  const exited = once(smbd, 'exit');
  const server: SambaServer = {
    port,
    dir,
    async sessions() {
      const { stdout } = await run('smbstatus', ['-s', conf, '-b'], { env: childEnv });
      // PID Username Group Machine (ipv4:…) Protocol Encryption Signing
      return stdout
        .split('\n')
        .map((line) => /\)\s+(SMB\S+)\s+(\S+)/.exec(line))
        .filter((match) => match !== null)
        .map((match) => ({ protocol: match[1]!, encryption: match[2]! }));
    },
    log: () => fs.readFile(`${dir}/log/smbd.log`, 'utf8').catch(() => ''),
    async stop() {
      if (smbd.exitCode === null && smbd.signalCode === null) {
        process.kill(-smbd.pid!, 'SIGTERM');
        await exited;
      }
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await waitFor(() => canConnect(port), { what: 'smbd to listen', timeoutMs: 20_000, intervalMs: 100 });
  } catch (error) {
    await server.stop();
    throw error;
  }
  return server;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
