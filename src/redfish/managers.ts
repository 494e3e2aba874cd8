import type { FastifyInstance } from 'fastify';
import { collection, link, odataType } from './odata.ts';
import { virtualMediaUri } from './virtual-media.ts';

export const managerUri = '/redfish/v1/Managers/bmc';
export const systemUri = '/redfish/v1/Systems/system';

/** The one manager (this BMC); virtual media hangs off it. */
export async function managerRoutes(app: FastifyInstance, options: { uuid: string }) {
  const tags = ['Managers'];
  app.get('/redfish/v1/Managers', { config: { privileges: ['Login'] }, schema: { tags } }, async () =>
    collection('ManagerCollection', '/redfish/v1/Managers', 'Manager Collection', [managerUri]),
  );

  app.get(managerUri, { config: { privileges: ['Login'] }, schema: { tags } }, async () => ({
    '@odata.id': managerUri,
    '@odata.type': odataType('Manager'),
    Id: 'bmc',
    Name: 'OpenBMC Manager',
    Description: 'Baseboard Management Controller',
    ManagerType: 'BMC',
    UUID: options.uuid,
    Status: { State: 'Enabled', Health: 'OK' },
    // Linked only once the VirtualMedia routes are registered, so the link never leads to a 404.
    ...(app.hasRoute({ method: 'GET', url: virtualMediaUri }) ? { VirtualMedia: link(virtualMediaUri) } : {}),
    Links: { ManagerForServers: [link(systemUri)], 'ManagerForServers@odata.count': 1 },
  }));
}

/** The host the BMC manages; clients (DMTF Tacklebox) find the manager, hence virtual media, from here. */
export async function systemRoutes(app: FastifyInstance) {
  const tags = ['Systems'];
  app.get('/redfish/v1/Systems', { config: { privileges: ['Login'] }, schema: { tags } }, async () =>
    collection('ComputerSystemCollection', '/redfish/v1/Systems', 'Computer System Collection', [systemUri]),
  );

  app.get(systemUri, { config: { privileges: ['Login'] }, schema: { tags } }, async () => ({
    '@odata.id': systemUri,
    '@odata.type': odataType('ComputerSystem'),
    Id: 'system',
    Name: 'system',
    Description: 'Computer System',
    SystemType: 'Physical',
    Status: { State: 'Enabled' },
    Links: { ManagedBy: [link(managerUri)], 'ManagedBy@odata.count': 1 },
  }));
}
