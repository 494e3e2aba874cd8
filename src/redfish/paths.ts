/** Redfish rules (OData headers, Accept, 405s, error bodies) apply under this prefix only. */
export const redfishPrefix = '/redfish';

export function isRedfishPath(url: string): boolean {
  const path = url.split('?', 1)[0] ?? '';
  return path === redfishPrefix || path.startsWith(`${redfishPrefix}/`);
}
