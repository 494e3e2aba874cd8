import { existsSync } from 'node:fs';
import path from 'node:path';

/** Settings every process of the stack reads from the environment (docs/contract.md §7). */
export interface Environment {
  host: string;
  port: number;
  stateDir: string;
  adminPassword: string | undefined;
  caBundle: string | undefined;
  slotConfig: string | undefined;
  /** Whether plain http:// images are allowed (VMEDIA_ALLOW_HTTP=1); both daemons must agree. */
  allowHttp: boolean;
  /** pino level of every daemon's log (VMEDIA_LOG_LEVEL). */
  logLevel: string;
  /** The client verbs' account and password, when no option gives them (VMEDIA_USER, VMEDIA_PASSWORD). */
  clientUser: string | undefined;
  clientPassword: string | undefined;
}

export function readEnvironment(env: NodeJS.ProcessEnv = process.env): Environment {
  const port = Number(env.VMEDIA_PORT ?? 8443);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`VMEDIA_PORT must be a port number, got ${JSON.stringify(env.VMEDIA_PORT)}`);
  }
  return {
    host: env.VMEDIA_HOST ?? '127.0.0.1',
    port,
    stateDir: path.resolve(env.VMEDIA_STATE_DIR ?? '.vmedia'),
    adminPassword: env.VMEDIA_ADMIN_PASSWORD || undefined,
    caBundle: env.VMEDIA_CA_BUNDLE || undefined,
    slotConfig: env.VMEDIA_CONFIG || undefined,
    allowHttp: /^(1|true|yes)$/i.test(env.VMEDIA_ALLOW_HTTP ?? ''),
    logLevel: logLevelFrom(env),
    clientUser: env.VMEDIA_USER || undefined,
    clientPassword: env.VMEDIA_PASSWORD || undefined,
  };
}

/** The log level alone: loggers are made before (and whether or not) the rest parses. */
export function logLevelFrom(env: NodeJS.ProcessEnv = process.env): string {
  return env.VMEDIA_LOG_LEVEL || 'info';
}

/** Well-known locations inside the state directory (docs/contract.md §7). */
export function statePaths(stateDir: string) {
  return {
    adminPassword: path.join(stateDir, 'admin-password'),
    dbusAddress: path.join(stateDir, 'dbus-address'),
    certs: path.join(stateDir, 'certs'),
    accounts: path.join(stateDir, 'accounts.json'),
    serviceUuid: path.join(stateDir, 'uuid'),
    runtime: path.join(stateDir, 'run'),
    /** Each Legacy slot's VerifyCertificate and added CAs (the service's). */
    trust: path.join(stateDir, 'trust'),
    host: path.join(stateDir, 'host'),
    /** The emulated host machine's console and firmware logs, QMP socket and boot settings. */
    machine: path.join(stateDir, 'machine'),
  };
}

/** Whether an executable of that name is on PATH (the launcher's choice of optional parts). */
export function onPath(command: string, env: NodeJS.ProcessEnv = process.env): boolean {
  return (env.PATH ?? '')
    .split(path.delimiter)
    .some((dir) => dir !== '' && existsSync(path.join(dir, command)));
}
