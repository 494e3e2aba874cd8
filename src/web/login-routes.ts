import type { FastifyInstance } from 'fastify';
import { clearSessionCookies, setSessionCookies, verifyLogin } from '../auth/authenticate.ts';
import { principalOf, unauthorized } from '../auth/plugin.ts';
import { errors } from '../redfish/errors.ts';

type LoginBody = { username: string; password: string } | { data: [string, string] };

/**
 * Cookie sessions for the web UI, as bmcweb does them: `POST /login` sets an HttpOnly session cookie and
 * a script-readable `XSRF-TOKEN` cookie whose value must come back in `X-XSRF-TOKEN` (or, for the `/nbd`
 * WebSocket, `Sec-WebSocket-Protocol`); `POST /logout` ends the session.
 */
export async function webLoginRoutes(app: FastifyInstance) {
  const tags = ['Web UI'];

  app.post<{ Body: LoginBody }>(
    '/login',
    {
      config: { public: true },
      schema: {
        tags,
        summary: 'Start a cookie session: {"username","password"} or bmcweb\'s {"data":[username,password]}',
        body: {
          oneOf: [
            {
              type: 'object',
              required: ['username', 'password'],
              properties: { username: { type: 'string' }, password: { type: 'string' } },
              additionalProperties: false,
            },
            {
              type: 'object',
              required: ['data'],
              properties: { data: { type: 'array', items: { type: 'string' }, minItems: 2, maxItems: 2 } },
              additionalProperties: false,
            },
          ],
        },
      },
    },
    async (request, reply) => {
      const [username, password] =
        'data' in request.body ? request.body.data : [request.body.username, request.body.password];
      const account = await verifyLogin(request, username, password);
      if (!account) throw unauthorized(request);
      const session = app.sessions.create(account.username, 'cookie', request.ip);
      request.log.info({ user: account.username, session: session.id }, 'web session created');
      return setSessionCookies(reply, session).send({
        data: `User '${account.username}' logged in`,
        message: '200 OK',
        status: 'ok',
      });
    },
  );

  app.post(
    '/logout',
    { config: { privileges: ['Login'] }, schema: { tags, summary: 'End the cookie session' } },
    async (request, reply) => {
      const session = principalOf(request).session;
      if (!session) throw errors.noValidSession();
      app.sessions.delete(session.id);
      return clearSessionCookies(reply).send({ data: 'User logged out', message: '200 OK', status: 'ok' });
    },
  );
}
