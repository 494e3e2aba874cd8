/**
 * The limits of the `/nbd/<n>` bridge that both of its ends must agree on: the relay in the server
 * (src/bridge/relay.ts) enforces them, and the NBD servers on the other side of the WebSocket (the CLI's
 * and the browser's transports in src/transport/) stay within them. Node-free, so the browser bundle can
 * import it.
 */

/**
 * Largest WebSocket message the bridge accepts (its `maxPayload`; ws closes with 1009 beyond it). It
 * bounds what the relay may hold per direction (high-water mark + one message + one socket read), so it
 * is small; an NBD reply may be 32 MiB, which is why peers split what they send (NBD is a byte stream:
 * message boundaries mean nothing to it).
 */
export const MAX_MESSAGE_BYTES = 1024 * 1024;

/**
 * Bytes the relay queues towards one side before it stops reading the other. Small, because the relay
 * only passes bytes through and every session costs this much (twice, one per direction).
 */
export const RELAY_HIGH_WATER_MARK = 1024 * 1024;
/** Queued bytes at or below which the relay reads again: a quarter of the mark, so it does not flap. */
export const RELAY_LOW_WATER_MARK = 256 * 1024;

/**
 * Largest message a peer (the CLI or the browser) sends: a quarter of MAX_MESSAGE_BYTES, so the bridge
 * never refuses one, and about what NBD clients ask for in one request, so a typical read reply leaves in
 * one or two messages.
 */
export const PEER_MAX_MESSAGE_BYTES = 256 * 1024;
/**
 * Bytes a peer's transport lets queue, for sending or received and not yet read, before the writer (or
 * the far side) waits: 16 replies of PEER_MAX_MESSAGE_BYTES, the 16 requests the CLI and the page serve
 * at once, so a full round of replies can be on its way before anything waits.
 */
export const PEER_HIGH_WATER_MARK = 4 * 1024 * 1024;
/** Received bytes at or below which the Node transport reads again: a quarter of the mark. */
export const PEER_LOW_WATER_MARK = 1024 * 1024;
