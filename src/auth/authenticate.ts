import type { FastifyReply, FastifyRequest } from 'fastify';
import type { AccountStore } from './accounts.ts';
import { type Privilege, privilegesOf, type RoleId } from './privileges.ts';
import type { Session, SessionKind } from './sessions.ts';

/** Who is making a request, as every route and the `/nbd` bridge see it. */
export interface Principal {
  username: string;
  roleId: RoleId;
  privileges: ReadonlySet<Privilege>;
  session?: { id: string; kind: SessionKind; xsrfToken?: string };
}

/** Cookie names as bmcweb and webui-vue use them. */
export const sessionCookie = 'SESSION';
export const xsrfCookie = 'XSRF-TOKEN';
/** Script-readable, as bmcweb sets it: webui-vue counts itself logged in while it is there. */
const authenticatedCookie = 'IsAuthenticated';

const cookieOptions = { path: '/', secure: true, sameSite: 'strict' } as const;

/**
 * Hands a browser its cookie session, the way bmcweb does: the token in an HttpOnly `SESSION` cookie,
 * and in script-readable cookies the XSRF token (echoed back in `X-XSRF-TOKEN` or as the WebSocket
 * subprotocol) and `IsAuthenticated`.
 */
export function setSessionCookies(reply: FastifyReply, session: Session): FastifyReply {
  if (session.kind !== 'cookie' || session.xsrfToken === undefined) {
    throw new Error(`session ${session.id} is not a cookie session`);
  }
  return reply
    .setCookie(sessionCookie, session.token, { ...cookieOptions, httpOnly: true })
    .setCookie(xsrfCookie, session.xsrfToken, cookieOptions)
    .setCookie(authenticatedCookie, 'true', cookieOptions);
}

/** Tells the browser to forget its cookie session (logout). */
export function clearSessionCookies(reply: FastifyReply): FastifyReply {
  for (const name of [sessionCookie, xsrfCookie, authenticatedCookie]) reply.clearCookie(name, cookieOptions);
  return reply;
}

const resolved = new WeakMap<FastifyRequest, Promise<Principal | undefined>>();

/**
 * Identifies the caller from `X-Auth-Token`, `Authorization: Token <token>`, `Authorization: Basic …` or
 * the session cookie, in that order, or answers `undefined`. The result is remembered per request: Basic
 * credentials are checked (and failures counted for lockout) once however often this is called.
 * Does not check privileges or the XSRF token; the authorization hook does (see plugin.ts).
 */
export function authenticate(request: FastifyRequest): Promise<Principal | undefined> {
  let principal = resolved.get(request);
  if (!principal) {
    principal = identify(request);
    resolved.set(request, principal);
  }
  return principal;
}

async function identify(request: FastifyRequest): Promise<Principal | undefined> {
  const { accounts, sessions } = request.server;
  const headerToken = request.headers['x-auth-token'];
  if (typeof headerToken === 'string') return fromSession(accounts, sessions.use(headerToken), 'token');

  const [scheme, credentials] = (request.headers.authorization ?? '').split(/\s+/, 2);
  if (scheme?.toLowerCase() === 'token' && credentials)
    return fromSession(accounts, sessions.use(credentials), 'token');
  if (scheme?.toLowerCase() === 'basic' && credentials) {
    const decoded = Buffer.from(credentials, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return undefined;
    const account = await verifyLogin(request, decoded.slice(0, colon), decoded.slice(colon + 1));
    return (
      account && {
        username: account.username,
        roleId: account.roleId,
        privileges: privilegesOf(account.roleId),
      }
    );
  }

  const cookie = request.cookies[sessionCookie];
  if (cookie) return fromSession(accounts, sessions.use(cookie), 'cookie');
  return undefined;
}

/**
 * The one password check of every login path — Basic credentials, POST Sessions and the web UI's
 * /login — behind the per-address throttle, which refuses before any scrypt is spent.
 */
export function verifyLogin(request: FastifyRequest, username: string, password: string) {
  const { accounts, loginThrottle } = request.server;
  return loginThrottle.check(request.ip, () => accounts.verify(username, password));
}

/** The principal behind a live session presented the way it was issued (header token or cookie). */
function fromSession(
  accounts: AccountStore,
  session: Session | undefined,
  kind: SessionKind,
): Principal | undefined {
  // A cookie session's token presented as a header (or the reverse) would sidestep the XSRF rules.
  if (!session || session.kind !== kind) return undefined;
  const account = accounts.get(session.username);
  if (!account?.enabled) return undefined;
  return {
    username: account.username,
    roleId: account.roleId,
    privileges: privilegesOf(account.roleId),
    session: { id: session.id, kind, ...(session.xsrfToken ? { xsrfToken: session.xsrfToken } : {}) },
  };
}
