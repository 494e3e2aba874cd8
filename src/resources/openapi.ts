import type { SwaggerOptions } from '@fastify/swagger';
import type { FastifyInstance } from 'fastify';

/**
 * The OpenAPI document is generated from the routes' own schemas (@fastify/swagger collects them as they
 * register); `npm run openapi` writes it to openapi/openapi.yaml and the service serves it at the URI
 * the Redfish specification reserves for it.
 */
export const openapiOptions: SwaggerOptions = {
  // Components named after the schemas/ files they come from: `VirtualMedia`, `requests.InsertMedia`.
  refResolver: {
    buildLocalReference: (json, _baseUri, _fragment, i) =>
      typeof json.$id === 'string' ? json.$id.replace(/\.json$/, '').replaceAll('/', '.') : `def-${i}`,
  },
  openapi: {
    openapi: '3.1.0',
    info: {
      title: 'vmedia Redfish service',
      description: 'Redfish service of a BMC: sessions, accounts, managers, systems and virtual media.',
      version: '0.1.0',
    },
    components: {
      securitySchemes: {
        basic: { type: 'http', scheme: 'basic' },
        token: { type: 'apiKey', in: 'header', name: 'X-Auth-Token' },
        cookie: { type: 'apiKey', in: 'cookie', name: 'SESSION' },
      },
    },
    security: [{ basic: [] }, { token: [] }, { cookie: [] }],
  },
};

export const openapiUri = '/redfish/v1/openapi.yaml';

export async function openapiRoutes(app: FastifyInstance) {
  app.get(
    openapiUri,
    {
      config: { privileges: ['Login'], mediaType: 'application/yaml' },
      schema: { tags: ['ServiceRoot'], summary: 'This OpenAPI document' },
    },
    async (_request, reply) =>
      reply.type('application/yaml; charset=utf-8').send(app.swagger({ yaml: true })),
  );
}
