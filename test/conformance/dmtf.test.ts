import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { baseMessages, baseRegistry } from '../../src/redfish/messages.ts';
import {
  odataType,
  oemCsdlUri,
  oemJsonSchemaUri,
  type ResourceType,
  resourceTypes,
} from '../../src/redfish/odata.ts';
import { readOnlyProperties } from '../../src/redfish/patch.ts';
import { adminPassword, type Response, startTestServer, type TestServer } from '../helpers/server.ts';
import { followTask, startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';
import { assertDmtfValid, dmtfBundle, dmtfMissing } from './dmtf-schemas.ts';
import {
  compareWithDmtf,
  disagreements,
  dmtfActionBody,
  dmtfDefinitionRef,
  dmtfProperties,
  dmtfWritable,
  ownSchemas,
  type Schema,
} from './schema-agreement.ts';

/**
 * Conformance with the official DMTF material: the Base registry, the published JSON schemas and the
 * OpenBMC OEM schema. The bundle is not part of the repository; without it this group is skipped
 * with one line saying so (CI has it, so there it always runs).
 */

const requestBodies: Record<string, { resource: ResourceType; action?: string; patch?: true }> = {
  'requests/InsertMedia.json': { resource: 'VirtualMedia', action: 'InsertMedia' },
  'requests/EjectMedia.json': { resource: 'VirtualMedia', action: 'EjectMedia' },
  'requests/VirtualMediaPatch.json': { resource: 'VirtualMedia', patch: true },
  'requests/SessionCreate.json': { resource: 'Session' },
  'requests/CertificateCreate.json': { resource: 'Certificate' },
  'requests/SessionServicePatch.json': { resource: 'SessionService', patch: true },
  'requests/AccountServicePatch.json': { resource: 'AccountService', patch: true },
  'requests/ManagerAccountCreate.json': { resource: 'ManagerAccount' },
  'requests/ManagerAccountPatch.json': { resource: 'ManagerAccount', patch: true },
  'requests/ComputerSystemPatch.json': { resource: 'ComputerSystem', patch: true },
  'requests/ComputerSystemReset.json': { resource: 'ComputerSystem', action: 'Reset' },
};

const readJson = async (...parts: string[]) =>
  JSON.parse(await fs.readFile(path.join(dmtfBundle, ...parts), 'utf8'));

describe('conformance with the DMTF bundle', { skip: dmtfMissing ?? false }, () => {
  describe('Base message registry', () => {
    test('every message we send matches the published registry (text, arguments, severity, resolution)', async () => {
      const registry = await readJson('registries', `Base.${baseRegistry.version}.json`);
      assert.equal(registry.RegistryPrefix, baseRegistry.prefix);
      assert.equal(registry.RegistryVersion, baseRegistry.version);
      for (const [id, ours] of Object.entries(baseMessages)) {
        const published = registry.Messages[id];
        assert.ok(published, `${id} is not in Base.${baseRegistry.version}`);
        assert.equal(ours.message, published.Message, id);
        assert.equal(ours.args, published.NumberOfArgs, id);
        assert.equal(ours.severity, published.MessageSeverity, id);
        assert.equal(ours.resolution, published.Resolution, id);
        assert.equal(new Set(published.Message.match(/%\d+/g) ?? []).size, published.NumberOfArgs, id);
      }
    });
  });

  describe('our schemas agree with the DMTF definitions', () => {
    const resources = [...ownSchemas.values()].filter((schema) => schema.properties?.['@odata.type']?.const);

    test('every resource schema names the version odata.ts serves', () => {
      assert.ok(resources.length >= 11, `only ${resources.length} resource schemas`);
      for (const schema of resources) {
        const type = schema.properties['@odata.type'].const as string;
        const name = type.split('.').at(-1) as ResourceType;
        assert.equal(type, odataType(name), schema.$id);
      }
    });

    for (const schema of resources) {
      test(`${schema.$id}: every property exists in DMTF with an allowed type and values`, async () => {
        const ref = dmtfDefinitionRef(schema.properties['@odata.type'].const);
        assert.deepEqual(await compareWithDmtf(schema.$id, ref), []);
      });
    }

    test('the error body and the collection schema', async () => {
      const errorRef =
        'http://redfish.dmtf.org/schemas/v1/redfish-error.v1_0_2.json#/definitions/RedfishError';
      assert.deepEqual(await compareWithDmtf('RedfishError.json', errorRef), []);
      for (const collection of ['VirtualMediaCollection', 'ManagerAccountCollection', 'TaskCollection']) {
        const ref = dmtfDefinitionRef(`#${collection}.${collection}`);
        assert.deepEqual(await compareWithDmtf('Collection.json', ref), [], collection);
      }
    });

    test('every request body schema is compared below', () => {
      const requests = [...ownSchemas.keys()].filter((id) => id.startsWith('requests/'));
      assert.deepEqual(requests.sort(), Object.keys(requestBodies).sort());
    });

    for (const [id, { resource, action, patch }] of Object.entries(requestBodies)) {
      test(`${id}: its parameters are DMTF's, with allowed types${patch ? '; writable ones writable' : ''}`, async () => {
        const type = odataType(resource);
        const schema = ownSchemas.get(id)!;
        const dmtf = action
          ? await dmtfActionBody(dmtfDefinitionRef(type, action))
          : await dmtfProperties(dmtfDefinitionRef(type));
        assert.deepEqual(await disagreements(schema, id, dmtf), []);
        if (patch) {
          const writable = await dmtfWritable(dmtfDefinitionRef(type));
          const readOnly = new Set(
            readOnlyProperties(schema as { properties: Record<string, { readOnly?: boolean }> }),
          );
          for (const [name, property] of Object.entries(schema.properties as Record<string, Schema>)) {
            if (readOnly.has(name)) continue;
            // An object's writable members are checked one by one (Boot/BootSourceOverrideTarget).
            const members = Object.keys(property.properties ?? {}).map((member) => `${name}/${member}`);
            for (const path of members.length ? members : [name]) {
              assert.ok(writable.has(path), `${path} is read-only in DMTF but writable in ${id}`);
            }
          }
        }
      });
    }
  });

  describe('every body the running stack sends validates against the DMTF schemas', () => {
    let stack: VmStack;
    const image = randomBytes(1024 * 1024);

    before(async () => {
      // The image server answers its first request slowly, so the insert outlasts the server's answer
      // bound and leaves a task to crawl.
      let requests = 0;
      // The emulated host's D-Bus services make Systems/system show its power, override and Reset.
      stack = await startVmStack({
        images: { '/images/disk.img': image },
        imageDelayMs: () => (requests++ === 0 ? 6500 : 0),
        machine: true,
      });
    });

    after(async () => {
      await stack?.stop();
    });

    test('crawled from the service root, with a medium inserted, a task, a session and error bodies', async () => {
      const { request } = stack.server;
      const inserted = await request(
        'POST',
        '/redfish/v1/Managers/bmc/VirtualMedia/Slot_2/Actions/VirtualMedia.InsertMedia',
        {
          body: { Image: `${stack.images.origin}/images/disk.img` },
        },
      );
      assert.equal(inserted.status, 202);
      assert.equal((await followTask(stack, String(inserted.headers.location))).status, 204);
      const trusted = await request('POST', '/redfish/v1/Managers/bmc/VirtualMedia/Slot_3/Certificates', {
        body: { CertificateString: stack.certificates.caCert, CertificateType: 'PEM' },
      });
      assert.equal(trusted.status, 201, trusted.text);
      await stack.server.login('admin', adminPassword);

      const seen = new Set<string>();
      const queue = ['/redfish/v1'];
      const bodies: Response[] = [];
      const links = (value: unknown): string[] => {
        if (Array.isArray(value)) return value.flatMap(links);
        if (typeof value !== 'object' || value === null) return [];
        return Object.entries(value).flatMap(([key, inner]) =>
          (key === '@odata.id' || key === '@Redfish.ActionInfo') && typeof inner === 'string'
            ? [inner]
            : links(inner),
        );
      };
      while (queue.length) {
        const uri = queue.shift()!.split('#')[0]!;
        if (seen.has(uri) || !uri.startsWith('/redfish/v1')) continue;
        seen.add(uri);
        const response = await request('GET', uri);
        assert.equal(response.status, 200, uri);
        bodies.push(response);
        queue.push(...links(response.json));
      }
      // Every resource type the service serves was reached, a Proxy and a Legacy slot among them.
      const types = new Set(bodies.map((response) => String(response.json['@odata.type'])));
      for (const type of resourceTypes) assert.ok(types.has(odataType(type)), `the crawl reached no ${type}`);
      assert.ok(seen.has('/redfish/v1/Managers/bmc/VirtualMedia/Slot_0'));
      assert.ok(seen.has('/redfish/v1/Managers/bmc/VirtualMedia/Slot_2'));
      assert.ok(seen.has('/redfish/v1/Systems/system/VirtualMedia/Slot_0'));
      assert.ok(seen.has('/redfish/v1/Systems/system/VirtualMedia/Slot_2/InsertMediaActionInfo'));
      assert.ok(seen.has('/redfish/v1/Systems/system/ResetActionInfo'));
      const system = bodies.find((response) => response.json['@odata.id'] === '/redfish/v1/Systems/system')!;
      assert.equal(system.json.PowerState, 'Off');
      assert.equal(system.json.Boot.BootSourceOverrideTarget, 'None');
      bodies.push(await request('GET', '/redfish/v1/NoSuchThing'));
      bodies.push(await request('PATCH', '/redfish/v1/SessionService', { body: { SessionTimeout: 'long' } }));
      for (const response of bodies) await assertDmtfValid(response.json);
    });
  });

  describe('OpenBMC OEM schema', () => {
    let server: TestServer;

    before(async () => {
      server = await startTestServer();
    });

    after(async () => {
      await server?.close();
    });

    test('the served CSDL defines the namespaces and property the published one does', async () => {
      const csdl = await server.request('GET', oemCsdlUri, { auth: { none: true } });
      assert.equal(csdl.status, 200);
      const published = await fs.readFile(
        path.join(dmtfBundle, 'oem-openbmc', 'OpenBMCVirtualMedia_v1.xml'),
        'utf8',
      );
      const namespaces = (xml: string) =>
        [...xml.matchAll(/<Schema [^>]*Namespace="([^"]+)"/g)].map((m) => m[1]);
      const properties = (xml: string) =>
        [...xml.matchAll(/<Property Name="(\w+)" Type="([\w.]+)"/g)].map((m) => m.slice(1));
      assert.deepEqual(namespaces(csdl.text), namespaces(published));
      assert.deepEqual(properties(csdl.text), [['WebSocketEndpoint', 'Edm.String']]);
      assert.ok(
        properties(published).some(([name, type]) => name === 'WebSocketEndpoint' && type === 'Edm.String'),
      );
    });

    test('the served JSON schema defines what the published one does', async () => {
      // Injected: the HTTPS test client validates /redfish bodies as resources, and a schema is none.
      const served = await server.app.inject({ method: 'GET', url: oemJsonSchemaUri });
      assert.equal(served.statusCode, 200);
      const published = await readJson('oem-openbmc', 'OpenBMCVirtualMedia.v1_0_0.json');
      const shape = (schema: typeof published) => {
        const definition = schema.definitions.VirtualMedia;
        return {
          title: schema.title,
          additionalProperties: definition.additionalProperties,
          properties: Object.fromEntries(
            Object.entries(definition.properties).map(([name, p]) => [name, (p as { type: unknown }).type]),
          ),
        };
      };
      assert.deepEqual(shape(served.json()), shape(published));
    });

    test("the Oem.OpenBMC part of our VirtualMedia schema agrees with OpenBMC's", async () => {
      const vm = ownSchemas.get('VirtualMedia.json')!;
      const oem = vm.properties.Oem;
      assert.ok(oem, 'VirtualMedia.json declares Oem');
      const published = await readJson('oem-openbmc', 'OpenBMCVirtualMedia.v1_0_0.json');
      const mine = JSON.stringify(oem);
      for (const name of Object.keys(published.definitions.VirtualMedia.properties)) {
        assert.ok(mine.includes(`"${name}"`), `${name} missing from our Oem.OpenBMC`);
      }
    });
  });
});
