import type { FastifyInstance, FastifyRequest } from 'fastify';
import fastifyPlugin from 'fastify-plugin';
import FindMyWay from 'find-my-way';
import { renderError } from './errors.ts';
import { etagOf } from './etag.ts';
import { RedfishError } from './messages.ts';
import { isRedfishPath } from './paths.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** What the route answers with, for `Accept` negotiation; JSON unless said otherwise. */
    mediaType?: string;
  }
}

/** Query parameters from the Redfish specification; none is supported (ProtocolFeaturesSupported says so). */
const specQueryParameters = new Set(['only', 'excerpt', 'includeoriginofconfig']);

const methodOrder = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'];

/**
 * The Redfish protocol rules (DSP0266 and SPEC §3) for everything under /redfish: OData-Version in and
 * out, Accept negotiation, `$` query parameters, `Allow` and 405 per known URI, `Link: rel=describedby`
 * and ETags on resources, and every error rendered as a Redfish error body.
 * Other paths (the web UI, `/login`, the `/nbd` WebSocket bridge) are left alone apart from error bodies.
 */
async function redfishProtocol(app: FastifyInstance) {
  // Which methods each known URI template answers: Fastify's router cannot be asked about other methods.
  const templates = FindMyWay({ ignoreTrailingSlash: true });
  const methodsByTemplate = new Map<string, Set<string>>();

  app.addHook('onRoute', (route) => {
    if (!isRedfishPath(route.url)) return;
    let methods = methodsByTemplate.get(route.url);
    if (!methods) {
      methods = new Set();
      methodsByTemplate.set(route.url, methods);
      templates.on('GET', route.url, () => {}, { methods });
    }
    for (const method of [route.method].flat()) methods.add(method);
  });

  const allowHeader = (methods: Set<string>) => methodOrder.filter((m) => methods.has(m)).join(', ');
  const methodsFor = (request: FastifyRequest): Set<string> | undefined => {
    if (!request.is404) return methodsByTemplate.get(request.routeOptions.url ?? '');
    const path = request.url.split('?', 1)[0] ?? '';
    return (templates.find('GET', path)?.store as { methods: Set<string> } | undefined)?.methods;
  };

  app.addHook('onRequest', async (request) => {
    if (!isRedfishPath(request.url)) return;
    const odataVersion = request.headers['odata-version'];
    if (odataVersion !== undefined && String(odataVersion).trim() !== '4.0') {
      throw RedfishError.of(412, 'HeaderInvalid', ['OData-Version']);
    }
    if (!acceptable(request.headers.accept, request.routeOptions.config.mediaType ?? 'application/json')) {
      throw RedfishError.of(406, 'HeaderInvalid', ['Accept']);
    }
    for (const name of Object.keys(request.query as Record<string, unknown>)) {
      if (name.startsWith('$') || specQueryParameters.has(name.toLowerCase())) {
        throw RedfishError.of(501, 'QueryParameterUnsupported', [name]);
      }
    }
  });

  // Headers that describe the resource come from the body itself, so every resource gets them alike.
  app.addHook('preSerialization', async (request, reply, payload: unknown) => {
    if (!isRedfishPath(request.url) || reply.statusCode !== 200 || !isResource(payload)) return payload;
    const type = payload['@odata.type'];
    if (typeof type === 'string') reply.header('Link', `<${schemaUri(type)}>; rel=describedby`);
    if (request.method === 'GET' || request.method === 'HEAD') reply.header('ETag', etagOf(payload));
    return payload;
  });

  app.addHook('onSend', async (request, reply, payload) => {
    if (!isRedfishPath(request.url)) return payload;
    reply.header('OData-Version', '4.0');
    const methods = methodsFor(request);
    if (methods && (request.method === 'GET' || request.method === 'HEAD' || reply.statusCode === 405)) {
      reply.header('Allow', allowHeader(methods));
    }
    return payload;
  });

  app.setNotFoundHandler(async (request) => {
    if (isRedfishPath(request.url) && methodsFor(request)) {
      throw RedfishError.of(405, 'OperationNotAllowed', []);
    }
    const path = request.url.split('?', 1)[0] ?? '';
    throw RedfishError.of(404, 'ResourceNotFound', ['Resource', path]);
  });

  app.setErrorHandler(renderError);
  // Request bodies are JSON; anything else is 415 rather than a string the handlers would misread.
  app.removeContentTypeParser('text/plain');
}

export const redfishProtocolPlugin = fastifyPlugin(redfishProtocol, { name: 'vmedia-redfish-protocol' });

/** Whether an `Accept` header admits `mediaType` (`type/subtype`, `type/*`, `*\/*`; parameters ignored). */
export function acceptable(accept: string | undefined, mediaType: string): boolean {
  if (!accept?.trim()) return true;
  const [type] = mediaType.split('/');
  return accept.split(',').some((range) => {
    const value = (range.split(';', 1)[0] ?? '').trim().toLowerCase();
    return value === mediaType || value === `${type}/*` || value === '*/*';
  });
}

function isResource(payload: unknown): payload is Record<string, unknown> {
  return typeof payload === 'object' && payload !== null && '@odata.id' in payload;
}

/** `#ServiceRoot.v1_20_0.ServiceRoot` → the published JSON schema of that exact version. */
function schemaUri(odataType: string): string {
  const [namespace] = odataType.replace(/^#/, '').split(/\.(?=[^.]+$)/);
  return `https://redfish.dmtf.org/schemas/v1/${namespace}.json`;
}
