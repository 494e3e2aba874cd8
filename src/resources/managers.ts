import type { FastifyInstance } from 'fastify';
import { managersUri, managerUri, systemUri, virtualMediaUri } from '../contract/redfish.ts';
import { collection, link, odataType } from '../redfish/odata.ts';
import { schemaRef } from '../redfish/schemas.ts';

/** The one manager (this BMC); virtual media hangs off it. */
export async function managerRoutes(app: FastifyInstance, options: { uuid: string }) {
  const tags = ['Managers'];
  app.get(
    managersUri,
    { config: { privileges: ['Login'] }, schema: { tags, response: { 200: schemaRef('Collection.json') } } },
    async () => collection('ManagerCollection', managersUri, 'Manager Collection', [managerUri]),
  );

  app.get(
    managerUri,
    { config: { privileges: ['Login'] }, schema: { tags, response: { 200: schemaRef('Manager.json') } } },
    async () => ({
      '@odata.id': managerUri,
      '@odata.type': odataType('Manager'),
      Id: 'bmc',
      Name: 'OpenBMC Manager',
      Description: 'Baseboard Management Controller',
      ManagerType: 'BMC',
      UUID: options.uuid,
      DateTime: dateTime(new Date()),
      DateTimeLocalOffset: '+00:00',
      Status: { State: 'Enabled', Health: 'OK' },
      // Linked only once the VirtualMedia routes are registered, so the link never leads to a 404.
      ...(app.hasRoute({ method: 'GET', url: virtualMediaUri })
        ? { VirtualMedia: link(virtualMediaUri) }
        : {}),
      Links: { ManagerForServers: [link(systemUri)], 'ManagerForServers@odata.count': 1 },
    }),
  );
}

/** RFC 3339 in UTC to the second, as bmcweb writes it (`2026-12-03T11:22:12+00:00`). */
function dateTime(now: Date): string {
  return `${now.toISOString().slice(0, 19)}+00:00`;
}
