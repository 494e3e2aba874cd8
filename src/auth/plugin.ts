import fastifyCookie from '@fastify/cookie';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fastifyPlugin from 'fastify-plugin';
import { errors, type RedfishError } from '../redfish/errors.ts';
import { isRedfishPath } from '../redfish/paths.ts';
import type { AccountStore } from './accounts.ts';
import { authenticate, type Principal } from './authenticate.ts';
import type { LoginThrottle } from './login-throttle.ts';
import { type Privilege, type PrivilegeRequirement, satisfies } from './privileges.ts';
import { safeEqual } from './secrets.ts';
import type { SessionStore } from './sessions.ts';

declare module 'fastify' {
  interface FastifyInstance {
    accounts: AccountStore;
    sessions: SessionStore;
    loginThrottle: LoginThrottle;
  }
  interface FastifyContextConfig {
    /** The privileges a caller needs (see PrivilegeRequirement); checked before the body is read. */
    privileges?: PrivilegeRequirement;
    /** Reachable without credentials. Every route declares either this or `privileges`. */
    public?: boolean;
  }
  interface FastifyRequest {
    /** The authenticated caller; set for every route that declares `privileges`. */
    principal: Principal | undefined;
  }
}

/** The caller of a route that declares `privileges` (the authorization hook has already run). */
export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw new Error(`route ${request.routeOptions.url} has no authenticated principal`);
  return request.principal;
}

/** 401, with a Basic challenge unless a script in a browser asked (else the browser pops up a dialog). */
export function unauthorized(request: FastifyRequest): RedfishError {
  const fromBrowserScript = request.headers['x-requested-with'] === 'XMLHttpRequest';
  const headers: Record<string, string> = fromBrowserScript
    ? {}
    : { 'WWW-Authenticate': 'Basic realm="Redfish"' };
  return errors.noValidSession(headers);
}

/**
 * A browser sends cookies with any request a hostile page triggers, so a cookie session must also prove
 * it can read the `XSRF-TOKEN` cookie: in `X-XSRF-TOKEN` for requests that change something, in
 * `Sec-WebSocket-Protocol` for a WebSocket upgrade (the only header a browser WebSocket can set).
 */
export function xsrfSatisfied(request: FastifyRequest, principal: Principal): boolean {
  const expected = principal.session?.kind === 'cookie' ? principal.session.xsrfToken : undefined;
  if (expected === undefined) return true;
  if (request.headers.upgrade?.toLowerCase() === 'websocket') {
    const offered = (request.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    return offered.some((protocol) => safeEqual(protocol, expected));
  }
  if (request.method === 'GET' || request.method === 'HEAD') return true;
  const header = request.headers['x-xsrf-token'];
  return typeof header === 'string' && safeEqual(header, expected);
}

/**
 * Authentication and authorization for every route, in one hook. Routes declare what they need in
 * `config` (`privileges` or `public`); a route declaring neither is a programming error caught at startup.
 * Unknown URIs under /redfish need a login too, so their existence is not revealed to strangers.
 */
async function authorization(
  app: FastifyInstance,
  options: { accounts: AccountStore; sessions: SessionStore; loginThrottle: LoginThrottle },
) {
  app.decorate('accounts', options.accounts);
  app.decorate('sessions', options.sessions);
  app.decorate('loginThrottle', options.loginThrottle);
  app.decorateRequest('principal', undefined);
  await app.register(fastifyCookie);

  app.addHook('onRoute', (route) => {
    const config = route.config as { privileges?: unknown; public?: unknown } | undefined;
    if (!config?.privileges && config?.public !== true) {
      throw new Error(
        `route ${route.method} ${route.url} declares neither config.privileges nor config.public`,
      );
    }
  });

  app.addHook('onRequest', async (request) => {
    const { config } = request.routeOptions;
    if (config.public) return;
    const required = request.is404
      ? isRedfishPath(request.url)
        ? ['Login' as const]
        : undefined
      : config.privileges;
    if (!required) return;
    const principal = await authenticate(request);
    if (!principal) throw unauthorized(request);
    if (!xsrfSatisfied(request, principal)) {
      throw errors.xsrfTokenInvalid();
    }
    if (!satisfies(principal.privileges, required)) throw errors.insufficientPrivilege();
    request.principal = principal;
  });
}

export const authorizationPlugin = fastifyPlugin(authorization, { name: 'vmedia-authorization' });

/**
 * For routes a user may call on their own things (ConfigureSelf, their own session): the caller owns the
 * target, or holds `privilege`. The route's declared privileges have already been checked.
 */
export function assertSelfOr(request: FastifyRequest, owner: string, privilege: Privilege) {
  const principal = principalOf(request);
  if (principal.username !== owner && !principal.privileges.has(privilege)) {
    throw errors.insufficientPrivilege();
  }
}
