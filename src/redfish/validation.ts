import type { FastifySchemaValidationError } from 'fastify';
import { type RedfishMessage, redfishMessage } from './messages.ts';

/**
 * Turns JSON-schema validation failures of a request body into Base registry messages, one per problem,
 * each naming the property (and pointing at it in RelatedProperties). In an action's body the same
 * problems use the ActionParameter* messages, which name the action.
 */
export function validationMessages(
  errors: readonly FastifySchemaValidationError[],
  body: unknown,
  action: string | undefined,
): RedfishMessage[] {
  return errors.map((error) => {
    const segments = error.instancePath.split('/').slice(1).map(unescapePointer);
    const params = error.params as Record<string, unknown>;
    const child = (params.additionalProperty ?? params.missingProperty) as string | undefined;
    if (child !== undefined) segments.push(child);
    const property = segments.join('/');
    const pointer = [`#/${segments.map(escapePointer).join('/')}`];
    if (segments.length === 0) return redfishMessage('MalformedJSON', []);
    const value = describe(valueAt(body, segments), property);

    switch (error.keyword) {
      case 'additionalProperties':
        return action
          ? redfishMessage('ActionParameterUnknown', [action, property], pointer)
          : redfishMessage('PropertyUnknown', [property], pointer);
      case 'required':
        return action
          ? redfishMessage('ActionParameterMissing', [action, property], pointer)
          : redfishMessage('PropertyMissing', [property], pointer);
      case 'type':
        return action
          ? redfishMessage('ActionParameterValueTypeError', [value, property, action], pointer)
          : redfishMessage('PropertyValueTypeError', [value, property], pointer);
      case 'enum':
      case 'const':
        return action
          ? redfishMessage('ActionParameterValueFormatError', [value, property, action], pointer)
          : redfishMessage('PropertyValueNotInList', [value, property], pointer);
      case 'minimum':
      case 'maximum':
      case 'exclusiveMinimum':
      case 'exclusiveMaximum':
        return action
          ? redfishMessage('ActionParameterValueFormatError', [value, property, action], pointer)
          : redfishMessage('PropertyValueOutOfRange', [value, property], pointer);
      default:
        return action
          ? redfishMessage('ActionParameterValueFormatError', [value, property, action], pointer)
          : redfishMessage('PropertyValueFormatError', [value, property], pointer);
    }
  });
}

function valueAt(body: unknown, segments: string[]): unknown {
  let value = body;
  for (const segment of segments) {
    value =
      value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[segment] : undefined;
  }
  return value;
}

/** The value as the message shows it; never a secret, whatever its type. */
function describe(value: unknown, property: string): string {
  if (/password|secret|token/i.test(property)) return '[redacted]';
  if (typeof value === 'string') return value;
  return value === undefined ? '' : JSON.stringify(value);
}

function escapePointer(segment: string): string {
  return segment.replaceAll('~', '~0').replaceAll('/', '~1');
}

function unescapePointer(segment: string): string {
  return segment.replaceAll('~1', '/').replaceAll('~0', '~');
}
