import type { FastifyInstance, FastifyRequest } from 'fastify';
import fastifyPlugin from 'fastify-plugin';
import FindMyWay from 'find-my-way';
import { renderError } from './error-handler.ts';
import { errors, type RedfishError } from './errors.ts';
import { etagOfJson } from './etag.ts';
import { isRedfishPath } from './paths.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** What the route answers with, for `Accept` negotiation; JSON unless said otherwise. */
    mediaType?: string;
  }
  interface FastifyReply {
    /** A resource answering GET or HEAD: its serialized body gets an ETag. */
    etagPending: boolean;
  }
}

interface AllowedMethods {
  methods: Set<string>;
  /** `Allow` listing `methods`, kept current as routes register. */
  header: string;
}

/** Query parameters from the Redfish specification; none is supported (ProtocolFeaturesSupported says so). */
const specQueryParameters = new Set(['only', 'excerpt', 'includeoriginofconfig']);

const methodOrder = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'];

/**
 * The Redfish protocol rules (DSP0266 and docs/contract.md §3) for everything under /redfish: OData-Version in and
 * out, Accept negotiation, `$` query parameters, `Allow` and 405 per known URI, `Link: rel=describedby`
 * and ETags on resources, and every error rendered as a Redfish error body.
 * Other paths (the web UI, `/login`, the `/nbd` WebSocket bridge) are left alone apart from error bodies.
 */
async function redfishProtocol(app: FastifyInstance) {
  // Which methods each known URI template answers: Fastify's router cannot be asked about other methods.
  const templates = FindMyWay({ ignoreTrailingSlash: true });
  const byTemplate = new Map<string, AllowedMethods>();

  app.addHook('onRoute', (route) => {
    if (!isRedfishPath(route.url)) return;
    let allowed = byTemplate.get(route.url);
    if (!allowed) {
      allowed = { methods: new Set(), header: '' };
      byTemplate.set(route.url, allowed);
      templates.on('GET', route.url, () => {}, allowed);
    }
    const { methods } = allowed;
    for (const method of [route.method].flat()) methods.add(method);
    allowed.header = methodOrder.filter((m) => methods.has(m)).join(', ');
  });

  const allowedFor = (request: FastifyRequest): AllowedMethods | undefined => {
    if (!request.is404) return byTemplate.get(request.routeOptions.url ?? '');
    const path = request.url.split('?', 1)[0] ?? '';
    return templates.find('GET', path)?.store as AllowedMethods | undefined;
  };

  // The hooks below run on every request: plain callbacks, no promise per hook.
  app.addHook('onRequest', (request, _reply, done) => {
    done(isRedfishPath(request.url) ? requestViolation(request) : undefined);
  });

  app.decorateReply('etagPending', false);

  // Headers that describe the resource come from the body itself, so every resource gets them alike.
  app.addHook('preSerialization', (request, reply, payload: unknown, done) => {
    if (reply.statusCode === 200 && isResource(payload) && isRedfishPath(request.url)) {
      const type = payload['@odata.type'];
      if (typeof type === 'string') reply.header('Link', describedBy(type));
      reply.etagPending = request.method === 'GET' || request.method === 'HEAD';
    }
    done(null, payload);
  });

  app.addHook('onSend', (request, reply, payload, done) => {
    if (isRedfishPath(request.url)) {
      reply.header('OData-Version', '4.0');
      // Tagged once serialized: the body is not serialized a second time just for its ETag.
      if (reply.etagPending && typeof payload === 'string') reply.header('ETag', etagOfJson(payload));
      const allowed = allowedFor(request);
      if (allowed && (request.method === 'GET' || request.method === 'HEAD' || reply.statusCode === 405)) {
        reply.header('Allow', allowed.header);
      }
    }
    done(null, payload);
  });

  app.setNotFoundHandler(async (request) => {
    if (isRedfishPath(request.url) && allowedFor(request)) {
      throw errors.operationNotAllowed();
    }
    const path = request.url.split('?', 1)[0] ?? '';
    throw errors.resourceNotFound('Resource', path);
  });

  app.setErrorHandler(renderError);
  // Request bodies are JSON; anything else is 415 rather than a string the handlers would misread.
  app.removeContentTypeParser('text/plain');
}

/** The OData-Version, Accept or query parameter rule a request under /redfish breaks, if any. */
function requestViolation(request: FastifyRequest): RedfishError | undefined {
  const odataVersion = request.headers['odata-version'];
  if (odataVersion !== undefined && String(odataVersion).trim() !== '4.0') {
    return errors.odataVersionUnsupported();
  }
  const { accept } = request.headers;
  if (
    accept !== undefined &&
    !acceptable(accept, request.routeOptions.config.mediaType ?? 'application/json')
  ) {
    return errors.notAcceptable();
  }
  for (const name of Object.keys(request.query as Record<string, unknown>)) {
    if (name.startsWith('$') || specQueryParameters.has(name.toLowerCase())) {
      return errors.queryParameterUnsupported(name);
    }
  }
  return undefined;
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

const linkByType = new Map<string, string>();

/** `#ServiceRoot.v1_20_0.ServiceRoot` → `Link` to the published JSON schema of that exact version. */
function describedBy(odataType: string): string {
  let link = linkByType.get(odataType);
  if (link === undefined) {
    const [namespace] = odataType.replace(/^#/, '').split(/\.(?=[^.]+$)/);
    link = `<https://redfish.dmtf.org/schemas/v1/${namespace}.json>; rel=describedby`;
    // Types come from our own resources, a handful: the map stays small.
    linkByType.set(odataType, link);
  }
  return link;
}
