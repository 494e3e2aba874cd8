import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { oemCsdlUri, oemJsonSchemaUri } from '../../src/redfish/odata.ts';
import { TaskStore } from '../../src/resources/tasks.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

describe('TaskStore', () => {
  test('a task runs to the outcome its work resolves to; a rejection is an internal error', async () => {
    const tasks = new TaskStore();
    const ok = tasks.run({ name: 'ok', targetUri: '/x', httpOperation: 'POST' }, async () => ({
      statusCode: 204,
      messages: [],
    }));
    assert.equal(ok.resource().TaskState, 'Running');
    assert.equal(ok.resource().EndTime, undefined);
    await ok.finished();
    assert.equal(ok.resource().TaskState, 'Completed');
    assert.equal(ok.resource().PercentComplete, 100);
    const broken = tasks.run({ name: 'broken', targetUri: '/x', httpOperation: 'POST' }, async () => {
      throw new Error('bug');
    });
    await broken.finished();
    assert.equal(broken.resource().TaskState, 'Exception');
    assert.equal(broken.outcome?.statusCode, 500);
    assert.equal(broken.resource().Messages[0]?.MessageId, 'Base.1.22.1.InternalError');
  });

  test('finished tasks are pruned after the retention time; running ones never', async () => {
    const tasks = new TaskStore({ retentionMs: 50 });
    const done = tasks.run({ name: 'd', targetUri: '/x', httpOperation: 'POST' }, async () => ({
      statusCode: 204,
      messages: [],
    }));
    const running = tasks.run(
      { name: 'r', targetUri: '/x', httpOperation: 'POST' },
      () => new Promise(() => {}),
    );
    await done.finished();
    assert.equal(tasks.get(done.id), done);
    await new Promise((resolve) => setTimeout(resolve, 80));
    assert.equal(tasks.get(done.id), undefined);
    assert.equal(tasks.get(running.id), running);
  });

  test('beyond the limit the oldest finished tasks make room', async () => {
    const tasks = new TaskStore({ maxTasks: 2 });
    const work = async () => ({ statusCode: 204, messages: [] });
    const first = tasks.run({ name: '1', targetUri: '/x', httpOperation: 'POST' }, work);
    await first.finished();
    const second = tasks.run({ name: '2', targetUri: '/x', httpOperation: 'POST' }, work);
    await second.finished();
    tasks.run({ name: '3', targetUri: '/x', httpOperation: 'POST' }, work);
    assert.deepEqual(
      tasks.all().map((t) => t.request.name),
      ['2', '3'],
    );
  });
});

describe('TaskService and the OEM schema over HTTPS', () => {
  let server: TestServer;

  before(async () => {
    server = await startTestServer();
  });

  after(async () => {
    await server?.close();
  });

  test('TaskService and Tasks are linked from the root and valid', async () => {
    const root = await server.request('GET', '/redfish/v1/');
    assert.equal(root.json.Tasks['@odata.id'], '/redfish/v1/TaskService');
    const service = await server.request('GET', '/redfish/v1/TaskService');
    assert.equal(service.status, 200);
    assert.equal(service.json.Tasks['@odata.id'], '/redfish/v1/TaskService/Tasks');
    const collection = await server.request('GET', '/redfish/v1/TaskService/Tasks');
    assert.equal(collection.status, 200);
    assert.deepEqual(collection.json.Members, []);
    const missing = await server.request('GET', '/redfish/v1/TaskService/Tasks/77');
    assert.equal(missing.status, 404);
  });

  test('$metadata references the VirtualMedia, Task and OEM schemas; the OEM CSDL is served without credentials', async () => {
    const metadata = await server.request('GET', '/redfish/v1/$metadata', { auth: { none: true } });
    for (const namespace of ['VirtualMedia.v1_6_5', 'Task.v1_7_4', 'TaskService.v1_3_0', 'TaskCollection']) {
      assert.match(metadata.text, new RegExp(`<edmx:Include Namespace="${namespace.replace('.', '\\.')}"`));
    }
    assert.match(metadata.text, new RegExp(`<edmx:Reference Uri="${oemCsdlUri}">`));
    assert.match(metadata.text, /<edmx:Include Namespace="OpenBMCVirtualMedia\.v1_0_0"\/>/);

    const csdl = await server.request('GET', oemCsdlUri, { auth: { none: true } });
    assert.equal(csdl.status, 200);
    assert.match(String(csdl.headers['content-type']), /^application\/xml/);
    // Comparison with OpenBMC's published CSDL: test/conformance.
    const properties = [...csdl.text.matchAll(/<Property Name="(\w+)" Type="([\w.]+)"/g)].map((m) =>
      m.slice(1),
    );
    assert.deepEqual(properties, [['WebSocketEndpoint', 'Edm.String']]);
  });

  test('the OEM JSON schema is served and defines WebSocketEndpoint as a read-only string or null', async () => {
    // Injected: the HTTPS test client validates /redfish bodies as resources, and a schema is none.
    const served = await server.app.inject({ method: 'GET', url: oemJsonSchemaUri });
    assert.equal(served.statusCode, 200);
    const property = served.json().definitions.VirtualMedia.properties.WebSocketEndpoint;
    assert.deepEqual(property.type, ['string', 'null']);
    assert.equal(property.readonly, true);
  });
});
