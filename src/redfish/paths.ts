/** Redfish rules (OData headers, Accept, 405s, error bodies) apply under this prefix only. */
export const redfishPrefix = '/redfish';

/** Whether a request URL (query string included) or route URL is `/redfish` or below it. */
export function isRedfishPath(url: string): boolean {
  // Asked several times per request: a look at one character, no splitting of the URL.
  if (!url.startsWith(redfishPrefix)) return false;
  const next = url.charAt(redfishPrefix.length);
  return next === '' || next === '/' || next === '?';
}
