import type { FastifyInstance } from 'fastify';
import { managerUri, systemsUri, systemUri, systemVirtualMediaUri } from '../contract/redfish.ts';
import { collection, link, odataType } from '../redfish/odata.ts';
import { schemaRef } from '../redfish/schemas.ts';

/**
 * The host the BMC manages. Clients find its virtual media here (ComputerSystem.VirtualMedia, DMTF's
 * location) or, through `Links.ManagedBy`, under the manager (bmcweb's).
 */
export async function systemRoutes(app: FastifyInstance) {
  const tags = ['Systems'];
  app.get(
    systemsUri,
    { config: { privileges: ['Login'] }, schema: { tags, response: { 200: schemaRef('Collection.json') } } },
    async () => collection('ComputerSystemCollection', systemsUri, 'Computer System Collection', [systemUri]),
  );

  app.get(
    systemUri,
    {
      config: { privileges: ['Login'] },
      schema: { tags, response: { 200: schemaRef('ComputerSystem.json') } },
    },
    async () => ({
      '@odata.id': systemUri,
      '@odata.type': odataType('ComputerSystem'),
      Id: 'system',
      Name: 'system',
      Description: 'Computer System',
      SystemType: 'Physical',
      Status: { State: 'Enabled' },
      // Linked only once the VirtualMedia routes are registered, so the link never leads to a 404.
      ...(app.hasRoute({ method: 'GET', url: systemVirtualMediaUri })
        ? { VirtualMedia: link(systemVirtualMediaUri) }
        : {}),
      Links: { ManagedBy: [link(managerUri)], 'ManagedBy@odata.count': 1 },
    }),
  );
}
