import type { FastifyInstance } from 'fastify';
import {
  accountServiceUri,
  managersUri,
  serviceRootUri,
  sessionServiceUri,
  sessionsUri,
  systemsUri,
  taskServiceUri,
} from '../contract/redfish.ts';
import { link, metadataDocument, odataType } from '../redfish/odata.ts';
import { schemaRef } from '../redfish/schemas.ts';

export interface ServiceRootOptions {
  /** Stable across restarts (persisted in the state directory). */
  uuid: string;
}

/** Top-level services linked from the root, also listed in the OData service document. */
const services = {
  Systems: systemsUri,
  Managers: managersUri,
  SessionService: sessionServiceUri,
  AccountService: accountServiceUri,
  Tasks: taskServiceUri,
} as const;

/** `/redfish`, the service root and the two OData documents: the only URIs served without credentials. */
export async function serviceRootRoutes(app: FastifyInstance, options: ServiceRootOptions) {
  const tags = ['ServiceRoot'];

  app.get(
    '/redfish',
    { config: { public: true }, schema: { tags, summary: 'Protocol versions' } },
    async () => ({
      v1: serviceRootUri,
    }),
  );

  app.get(
    serviceRootUri,
    {
      config: { public: true },
      schema: {
        tags,
        summary: 'The service root (also at /redfish/v1)',
        response: { 200: schemaRef('ServiceRoot.json') },
      },
    },
    async () => ({
      '@odata.id': serviceRootUri,
      '@odata.type': odataType('ServiceRoot'),
      Id: 'RootService',
      Name: 'Root Service',
      RedfishVersion: '1.20.0',
      UUID: options.uuid,
      Product: 'vmedia',
      ProtocolFeaturesSupported: {
        ExcerptQuery: false,
        ExpandQuery: { ExpandAll: false, Levels: false, Links: false, NoLinks: false },
        FilterQuery: false,
        OnlyMemberQuery: false,
        SelectQuery: false,
        TopSkipQuery: false,
        DeepOperations: { DeepPATCH: false, DeepPOST: false },
        MultipleHTTPRequests: false,
      },
      ...Object.fromEntries(Object.entries(services).map(([name, uri]) => [name, link(uri)])),
      Links: { Sessions: link(sessionsUri) },
    }),
  );

  app.get(
    '/redfish/v1/odata',
    { config: { public: true }, schema: { tags, summary: 'OData service document' } },
    async () => ({
      '@odata.context': '/redfish/v1/$metadata',
      value: [
        { name: 'Service', kind: 'Singleton', url: serviceRootUri },
        ...Object.entries(services).map(([name, url]) => ({ name, kind: 'Singleton', url })),
      ],
    }),
  );

  const metadata = metadataDocument();
  app.get(
    '/redfish/v1/$metadata',
    {
      config: { public: true, mediaType: 'application/xml' },
      schema: { tags, summary: 'OData metadata document (CSDL references)' },
    },
    async (_request, reply) => reply.type('application/xml; charset=utf-8').send(metadata),
  );
}
