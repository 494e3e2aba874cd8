import fastifySwagger from '@fastify/swagger';
import Fastify, { type FastifyInstance } from 'fastify';
import { AccountStore } from '../auth/accounts.ts';
import { LoginThrottle, type LoginThrottlePolicy } from '../auth/login-throttle.ts';
import { authorizationPlugin } from '../auth/plugin.ts';
import { provisionAdmin } from '../auth/provision.ts';
import { type SessionLimits, SessionStore } from '../auth/sessions.ts';
import { nbdBridgePlugin } from '../bridge/plugin.ts';
import { statePaths } from '../config/environment.ts';
import { absentHost, type HostControl } from '../dbus/host-control-client.ts';
import { absentVirtualMedia, type VirtualMediaClient } from '../dbus/virtual-media-client.ts';
import { createLogger, deferredRequestLogger, type Logger } from '../log.ts';
import { redfishProtocolPlugin } from '../redfish/protocol.ts';
import {
  lazyValidators,
  redfishSchemasPlugin,
  sharedSerializers,
  validationOptions,
} from '../redfish/schemas.ts';
import { accountServiceRoutes } from '../resources/account-service.ts';
import { managerRoutes } from '../resources/managers.ts';
import { oemSchemaRoutes } from '../resources/oem-openbmc.ts';
import { openapiOptions, openapiRoutes } from '../resources/openapi.ts';
import { serviceRootRoutes } from '../resources/service-root.ts';
import { sessionServiceRoutes } from '../resources/session-service.ts';
import { systemRoutes } from '../resources/systems.ts';
import { TaskStore, tasksPlugin } from '../resources/tasks.ts';
import { virtualMediaRoutes } from '../resources/virtual-media.ts';
import { loadTlsMaterial, type TlsFiles, type TlsMaterial } from '../tls/certificate.ts';
import { tlsPolicy } from '../tls/policy.ts';
import { webLoginRoutes } from '../web/login-routes.ts';
import { webUiPlugin } from '../web/plugin.ts';
import { answerClientError } from './client-errors.ts';
import { securityHeadersPlugin } from './security-headers.ts';
import { loadServiceUuid } from './service-uuid.ts';

export interface ServerOptions {
  stateDir: string;
  host: string;
  port: number;
  logger?: Logger;
  /** The user's certificate and key; without them a self-signed pair is generated in `<state>/certs`. */
  tls?: TlsFiles;
  /** The `admin` password when the accounts are created on first start; random (and saved) if absent. */
  adminPassword?: string;
  /** The VirtualMedia service over D-Bus; without it the VirtualMedia routes answer 503. */
  virtualMedia?: VirtualMediaClient;
  /** The host's power and boot override over D-Bus; without it Systems/system shows neither. */
  hostControl?: HostControl;
  /** Failed logins allowed per client address before 429, and password checks at once (defaults: 10/60 s, 4). */
  loginThrottle?: LoginThrottlePolicy;
  /** Sessions per account and in all (defaults: 16 and 64). */
  sessionLimits?: SessionLimits;
  /** Plain http:// images allowed (VMEDIA_ALLOW_HTTP); off unless the integrator says so. */
  allowHttp?: boolean;
}

/** What the server keeps in its state directory, read (and on first start created) before it is built. */
export interface ServerState {
  tls: TlsMaterial;
  accounts: AccountStore;
  uuid: string;
  /** Set on the first start when no admin password was given: the one `admin` got. */
  generatedPassword?: string;
}

/** Request bodies are small JSON documents; media flows over the `/nbd` WebSocket, not through bodies. */
const bodyLimit = 64 * 1024;

/**
 * The one step that writes to the state directory: the certificate, the accounts with their first
 * `admin`, and the service UUID are created on first start and read back afterwards.
 */
export async function prepareServerState(
  options: Pick<ServerOptions, 'stateDir' | 'tls' | 'adminPassword'>,
): Promise<ServerState> {
  const paths = statePaths(options.stateDir);
  const tls = await loadTlsMaterial(paths.certs, options.tls);
  const { generatedPassword } = await provisionAdmin(options.stateDir, options.adminPassword);
  const accounts = await AccountStore.open(paths.accounts);
  const uuid = await loadServiceUuid(paths.serviceUuid);
  return { tls, accounts, uuid, ...(generatedPassword ? { generatedPassword } : {}) };
}

/**
 * The HTTPS server with every plugin registered, not yet listening (`app.listen({ host, port })`); building
 * writes no file. Order matters: cross-cutting plugins (headers, OpenAPI collection, Redfish
 * protocol, authorization) register before any route so their `onRoute` hooks see every route.
 */
export async function buildServer(options: ServerOptions, state: ServerState): Promise<FastifyInstance> {
  const { tls, accounts, uuid } = state;
  const sessions = new SessionStore(() => accounts.sessionTimeout, Date.now, options.sessionLimits);
  const loginThrottle = new LoginThrottle(options.loginThrottle);

  const app = Fastify({
    loggerInstance: options.logger ?? createLogger('server'),
    childLoggerFactory: deferredRequestLogger,
    schemaController: {
      compilersFactory: { buildSerializer: sharedSerializers, buildValidator: lazyValidators },
    },
    https: { cert: tls.cert, key: tls.key, ...tlsPolicy },
    bodyLimit,
    routerOptions: { ignoreTrailingSlash: true },
    ajv: validationOptions,
    clientErrorHandler: answerClientError,
    // Keep-alive connections (browsers, the validator) must not hold up a shutdown.
    forceCloseConnections: true,
  });

  await app.register(securityHeadersPlugin);
  await app.register(fastifySwagger, openapiOptions);
  await app.register(redfishSchemasPlugin);
  await app.register(redfishProtocolPlugin);
  await app.register(authorizationPlugin, { accounts, sessions, loginThrottle });

  await app.register(serviceRootRoutes, { uuid });
  await app.register(sessionServiceRoutes);
  await app.register(accountServiceRoutes);
  await app.register(managerRoutes, { uuid });
  await app.register(systemRoutes, { host: options.hostControl ?? absentHost });
  await app.register(openapiRoutes);
  await app.register(webLoginRoutes);
  await app.register(webUiPlugin);

  // Feature plugins register here, each declaring `config.privileges` or `config.public` on its routes:
  // VirtualMedia (Managers/bmc/VirtualMedia), TaskService, the /nbd/<n> WebSocket bridge and the web UI.
  const tasks = new TaskStore();
  await app.register(tasksPlugin, { tasks });
  await app.register(oemSchemaRoutes);
  // The bridge first: EjectMedia on a Proxy slot ends its session through `app.nbdBridge`.
  const virtualMedia = options.virtualMedia ?? absentVirtualMedia;
  await app.register(nbdBridgePlugin, { client: virtualMedia });
  await app.register(virtualMediaRoutes, {
    client: virtualMedia,
    tasks,
    policy: { allowHttp: options.allowHttp ?? false },
  });

  // Plugins are written against the default instance type; the HTTPS server differs only in `app.server`.
  return app as unknown as FastifyInstance;
}

/**
 * Builds the server and listens; answers the HTTPS URL clients should use, and the password `admin`
 * was given if this first start generated one.
 */
export async function startServer(
  options: ServerOptions,
): Promise<{ app: FastifyInstance; url: string; generatedPassword?: string }> {
  const state = await prepareServerState(options);
  const app = await buildServer(options, state);
  await app.listen({ host: options.host, port: options.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  const url = `https://${host}:${port}`;
  return { app, url, ...(state.generatedPassword ? { generatedPassword: state.generatedPassword } : {}) };
}
