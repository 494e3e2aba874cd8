import type { FastifyInstance, FastifyRequest } from 'fastify';
import sessionServicePatch from '../../schemas/requests/SessionServicePatch.json' with { type: 'json' };
import { clearSessionCookies, setSessionCookies, verifyLogin } from '../auth/authenticate.ts';
import { assertSelfOr, principalOf, unauthorized } from '../auth/plugin.ts';
import type { Session } from '../auth/sessions.ts';
import { sessionServiceUri, sessionsUri } from '../contract/redfish.ts';
import { errors } from '../redfish/errors.ts';
import { assertIfMatch } from '../redfish/etag.ts';
import { collection, creationUris, link, odataType } from '../redfish/odata.ts';
import { patchChanges, readOnlyProperties } from '../redfish/patch.ts';
import { schemaRef } from '../redfish/schemas.ts';

const serviceUri = sessionServiceUri;
const tags = ['SessionService'];

/** Named in the PATCH body schema without a type: sending one is PropertyNotWritable. */
const serviceReadOnly = readOnlyProperties(sessionServicePatch);

function sessionResource(session: Session) {
  return {
    '@odata.id': `${sessionsUri}/${session.id}`,
    '@odata.type': odataType('Session'),
    Id: session.id,
    Name: 'User Session',
    Description: 'Manager User Session',
    UserName: session.username,
    SessionType: session.kind === 'cookie' ? 'WebUI' : 'Redfish',
    ClientOriginIPAddress: session.clientAddress,
    CreatedTime: new Date(session.createdAt).toISOString(),
    Password: null,
  };
}

/**
 * SessionService: sessions (create = log in, delete = log out) — a token for Redfish clients, a cookie
 * session for scripts in a browser — and the idle timeout.
 */
export async function sessionServiceRoutes(app: FastifyInstance) {
  const serviceResource = () => ({
    '@odata.id': serviceUri,
    '@odata.type': odataType('SessionService'),
    Id: 'SessionService',
    Name: 'Session Service',
    Description: 'Session Service',
    ServiceEnabled: true,
    SessionTimeout: app.accounts.sessionTimeout,
    Sessions: link(sessionsUri),
  });

  app.get(
    serviceUri,
    {
      config: { privileges: ['Login'] },
      schema: { tags, response: { 200: schemaRef('SessionService.json') } },
    },
    async () => serviceResource(),
  );

  app.patch<{ Body: { SessionTimeout?: number } }>(
    serviceUri,
    {
      config: { privileges: ['ConfigureManager'] },
      schema: {
        tags,
        summary: 'Set the idle timeout',
        body: schemaRef('requests/SessionServicePatch.json'),
        response: { 200: schemaRef('SessionService.json') },
      },
    },
    async (request, reply) => {
      assertIfMatch(request, reply, serviceResource(), 'SessionService.json');
      const changes = patchChanges(request.body, serviceReadOnly);
      if (changes.SessionTimeout !== undefined) await app.accounts.setSessionTimeout(changes.SessionTimeout);
      return serviceResource();
    },
  );

  /** Sessions a caller may see: all of them with ConfigureManager, else only their own. */
  const visibleSessions = (request: FastifyRequest) => {
    const principal = principalOf(request);
    return app.sessions
      .list()
      .filter((s) => principal.privileges.has('ConfigureManager') || s.username === principal.username);
  };

  app.get(
    sessionsUri,
    { config: { privileges: ['Login'] }, schema: { tags, response: { 200: schemaRef('Collection.json') } } },
    async (request) =>
      collection(
        'SessionCollection',
        sessionsUri,
        'Session Collection',
        visibleSessions(request).map((s) => `${sessionsUri}/${s.id}`),
      ),
  );

  for (const uri of creationUris(sessionsUri)) {
    app.post<{ Body: { UserName: string; Password: string } }>(
      uri,
      {
        config: { public: true },
        schema: {
          tags,
          summary:
            'Log in: 201 with the token in X-Auth-Token, or with X-Requested-With the SESSION and XSRF-TOKEN cookies',
          body: schemaRef('requests/SessionCreate.json'),
          response: { 201: schemaRef('Session.json') },
        },
      },
      async (request, reply) => {
        const account = await verifyLogin(request, request.body.UserName, request.body.Password);
        if (!account) throw unauthorized(request);
        // bmcweb's rule: a script in a browser (webui-vue sends X-Requested-With) gets a cookie session,
        // whose XSRF token it can also offer to the /nbd WebSocket; any other client gets a token.
        const kind = request.headers['x-requested-with'] ? 'cookie' : 'token';
        const session = app.sessions.create(account.username, kind, request.ip);
        request.log.info({ user: account.username, session: session.id, kind }, 'session created');
        reply.code(201).header('Location', `${sessionsUri}/${session.id}`);
        if (kind === 'cookie') setSessionCookies(reply, session);
        else reply.header('X-Auth-Token', session.token);
        return reply.send(sessionResource(session));
      },
    );
  }

  const findSession = (request: FastifyRequest<{ Params: { id: string } }>): Session => {
    const session = app.sessions.get(request.params.id);
    if (!session) throw errors.resourceNotFound('Session', request.params.id);
    assertSelfOr(request, session.username, 'ConfigureManager');
    return session;
  };

  app.get<{ Params: { id: string } }>(
    `${sessionsUri}/:id`,
    { config: { privileges: ['Login'] }, schema: { tags, response: { 200: schemaRef('Session.json') } } },
    async (request) => sessionResource(findSession(request)),
  );

  app.delete<{ Params: { id: string } }>(
    `${sessionsUri}/:id`,
    { config: { privileges: ['Login'] }, schema: { tags, summary: 'Log out' } },
    async (request, reply) => {
      const session = findSession(request);
      app.sessions.delete(session.id);
      request.log.info({ user: session.username, session: session.id }, 'session deleted');
      // Logging out of the browser's own cookie session: its cookies go too.
      if (principalOf(request).session?.id === session.id && session.kind === 'cookie') {
        clearSessionCookies(reply);
      }
      return reply.code(204).send();
    },
  );
}
