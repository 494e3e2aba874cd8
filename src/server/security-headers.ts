import type { FastifyInstance } from 'fastify';
import fastifyPlugin from 'fastify-plugin';

/**
 * Response headers every answer carries (as bmcweb sends them): HTTPS only, no framing, no MIME sniffing,
 * and no caching of what may be sensitive. A route may set its own Cache-Control (static UI files).
 */
const headers = {
  'Strict-Transport-Security': 'max-age=31536000; includeSubdomains',
  'X-Frame-Options': 'DENY',
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Content-Security-Policy':
    "default-src 'self'; connect-src 'self' wss:; object-src 'none'; frame-ancestors 'none'",
};

async function securityHeaders(app: FastifyInstance) {
  // Every response passes here: a plain callback, no promise per response.
  app.addHook('onSend', (_request, reply, payload, done) => {
    reply.headers(headers);
    if (!reply.hasHeader('Cache-Control')) reply.header('Cache-Control', 'no-store, max-age=0');
    done(null, payload);
  });
}

export const securityHeadersPlugin = fastifyPlugin(securityHeaders, { name: 'vmedia-security-headers' });
