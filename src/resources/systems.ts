import type { FastifyInstance } from 'fastify';
import { managerUri, systemsUri, systemUri } from '../contract/redfish.ts';
import { collection, link, odataType } from '../redfish/odata.ts';
import { schemaRef } from '../redfish/schemas.ts';

/** The host the BMC manages; clients (DMTF Tacklebox) find the manager, hence virtual media, from here. */
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
      Links: { ManagedBy: [link(managerUri)], 'ManagedBy@odata.count': 1 },
    }),
  );
}
