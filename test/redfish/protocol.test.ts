import assert from 'node:assert/strict';
import https from 'node:https';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.ts';

let server: TestServer;
before(async () => {
  server = await startTestServer();
});
after(() => server.close());

const noAuth = { none: true } as const;

describe('standard URIs', () => {
  test('GET /redfish answers exactly {"v1":"/redfish/v1/"}', async () => {
    const response = await server.request('GET', '/redfish', { auth: noAuth });
    assert.equal(response.status, 200);
    assert.equal(response.text, '{"v1":"/redfish/v1/"}');
    assert.equal(response.headers['odata-version'], '4.0');
  });

  test('the service root answers at /redfish/v1 and /redfish/v1/ without credentials', async () => {
    const withSlash = await server.request('GET', '/redfish/v1/', { auth: noAuth });
    const without = await server.request('GET', '/redfish/v1', { auth: noAuth });
    assert.equal(withSlash.status, 200);
    assert.equal(without.status, 200);
    assert.deepEqual(without.json, withSlash.json);
    assert.equal(withSlash.json['@odata.id'], '/redfish/v1/');
    assert.deepEqual(withSlash.json.Links.Sessions, { '@odata.id': '/redfish/v1/SessionService/Sessions' });
    assert.equal(withSlash.json.ProtocolFeaturesSupported.FilterQuery, false);
    assert.match(withSlash.json.UUID, /^[0-9a-f-]{36}$/);
    assert.match(String(withSlash.headers['content-type']), /^application\/json; ?charset=utf-8$/);
    assert.ok(withSlash.headers['cache-control']);
  });

  test('the service root UUID is stable across restarts of the same state directory', async () => {
    const first = (await server.request('GET', '/redfish/v1/')).json.UUID;
    const again = await startTestServer({ stateDir: server.stateDir });
    try {
      assert.equal((await again.request('GET', '/redfish/v1/')).json.UUID, first);
    } finally {
      await again.close();
    }
  });

  test('$metadata is XML with an EntityContainer and references every namespace the service serves', async () => {
    const response = await server.request('GET', '/redfish/v1/$metadata', { auth: noAuth });
    assert.equal(response.status, 200);
    assert.match(String(response.headers['content-type']), /^application\/xml/);
    assert.match(
      response.text,
      /<EntityContainer Name="Service" Extends="ServiceRoot\.v1_\d+_\d+\.ServiceContainer"\/>/,
    );
    const served = [
      '/redfish/v1/',
      '/redfish/v1/SessionService',
      '/redfish/v1/SessionService/Sessions',
      '/redfish/v1/AccountService',
      '/redfish/v1/AccountService/Accounts',
      '/redfish/v1/AccountService/Accounts/admin',
      '/redfish/v1/AccountService/Roles',
      '/redfish/v1/AccountService/Roles/ReadOnly',
      '/redfish/v1/Managers',
      '/redfish/v1/Managers/bmc',
      '/redfish/v1/Systems',
      '/redfish/v1/Systems/system',
    ];
    for (const uri of served) {
      const type: string = (await server.request('GET', uri)).json['@odata.type'];
      const namespace = type.replace(/^#/, '').split('.').slice(0, -1).join('.');
      assert.ok(
        response.text.includes(`<edmx:Include Namespace="${namespace}"`),
        `${namespace} in $metadata`,
      );
    }
  });

  test('/redfish/v1/odata lists the service and its top-level resources', async () => {
    const response = await server.request('GET', '/redfish/v1/odata', { auth: noAuth });
    assert.equal(response.status, 200);
    assert.equal(response.json['@odata.context'], '/redfish/v1/$metadata');
    const urls = response.json.value.map((entry: { url: string }) => entry.url);
    assert.ok(urls.includes('/redfish/v1/'));
    assert.ok(urls.includes('/redfish/v1/SessionService'));
  });

  test('a resource has an Id equal to its last URI segment', async () => {
    for (const uri of [
      '/redfish/v1/Managers/bmc',
      '/redfish/v1/Systems/system',
      '/redfish/v1/AccountService/Roles/Operator',
    ]) {
      const response = await server.request('GET', uri);
      assert.equal(response.json.Id, uri.split('/').at(-1));
      assert.equal(response.json['@odata.id'], uri);
    }
  });

  test('the system links to the manager that manages it', async () => {
    const system = await server.request('GET', '/redfish/v1/Systems/system');
    assert.deepEqual(system.json.Links.ManagedBy, [{ '@odata.id': '/redfish/v1/Managers/bmc' }]);
    const manager = await server.request('GET', '/redfish/v1/Managers/bmc');
    assert.deepEqual(manager.json.Links.ManagerForServers, [{ '@odata.id': '/redfish/v1/Systems/system' }]);
  });
});

describe('headers', () => {
  test('every Redfish response carries OData-Version 4.0, errors included', async () => {
    for (const [uri, auth] of [
      ['/redfish/v1/', noAuth],
      ['/redfish/v1/Managers', noAuth],
      ['/redfish/v1/Nowhere', undefined],
    ] as const) {
      const response = await server.request('GET', uri, auth ? { auth } : {});
      assert.equal(response.headers['odata-version'], '4.0', uri);
    }
  });

  test('paths outside /redfish follow no Redfish rules', async () => {
    const response = await server.request('GET', '/definitely-not-redfish', {
      headers: { 'OData-Version': '4.1' },
    });
    assert.equal(response.status, 404);
    assert.equal(response.headers['odata-version'], undefined);
  });

  test('a request asking for OData-Version 4.1 gets 412; 4.0 is fine', async () => {
    const wrong = await server.request('GET', '/redfish/v1/', { headers: { 'OData-Version': '4.1' } });
    assert.equal(wrong.status, 412);
    const right = await server.request('GET', '/redfish/v1/', { headers: { 'OData-Version': '4.0' } });
    assert.equal(right.status, 200);
  });

  test('Accept: JSON, application/* and */*, with or without charset, are all served', async () => {
    for (const accept of [
      'application/json',
      'application/json;charset=utf-8',
      'application/*',
      'application/*;charset=utf-8',
      '*/*',
      '*/*;charset=utf-8',
      'text/html, application/json;q=0.9',
    ]) {
      const response = await server.request('GET', '/redfish/v1/', { headers: { Accept: accept } });
      assert.equal(response.status, 200, accept);
    }
    const metadata = await server.request('GET', '/redfish/v1/$metadata', {
      headers: { Accept: 'application/xml' },
    });
    assert.equal(metadata.status, 200);
    const refused = await server.request('GET', '/redfish/v1/', { headers: { Accept: 'text/html' } });
    assert.equal(refused.status, 406);
  });

  test('GET on the service root has Link rel=describedby to the schema version in @odata.type', async () => {
    const response = await server.request('GET', '/redfish/v1/');
    const version = response.json['@odata.type'].split('.')[1];
    assert.match(
      String(response.headers.link),
      new RegExp(`<[^>]*/ServiceRoot\\.${version}\\.json>; rel=describedby`),
    );
  });

  test('GET answers Allow with the methods the URI supports', async () => {
    assert.equal((await server.request('GET', '/redfish/v1/')).headers.allow, 'GET, HEAD');
    assert.equal(
      (await server.request('GET', '/redfish/v1/AccountService/Accounts')).headers.allow,
      'GET, HEAD, POST',
    );
    assert.equal(
      (await server.request('GET', '/redfish/v1/AccountService/Accounts/admin')).headers.allow,
      'GET, HEAD, PATCH, DELETE',
    );
    assert.equal(
      (await server.request('GET', '/redfish/v1/SessionService')).headers.allow,
      'GET, HEAD, PATCH',
    );
  });

  test('HEAD answers the GET headers without a body', async () => {
    const response = await server.request('HEAD', '/redfish/v1/SessionService');
    assert.equal(response.status, 200);
    assert.equal(response.text, '');
    assert.equal(response.headers.allow, 'GET, HEAD, PATCH');
    assert.match(String(response.headers.link), /rel=describedby/);
    assert.equal(response.headers['odata-version'], '4.0');
  });

  test('security headers go out on every response: API, web UI, errors', async () => {
    for (const [uri, status] of [
      ['/redfish/v1/', 200],
      ['/', 200],
      ['/redfish/v1/Managers/bmc', 401],
      ['/no/such/page', 404],
    ] as const) {
      const response = await server.request('GET', uri, { auth: noAuth });
      assert.equal(response.status, status, uri);
      assert.match(String(response.headers['strict-transport-security']), /max-age=\d+/, uri);
      assert.equal(response.headers['x-frame-options'], 'DENY', uri);
      assert.equal(response.headers['x-content-type-options'], 'nosniff', uri);
      assert.equal(response.headers['referrer-policy'], 'no-referrer', uri);
      const csp = String(response.headers['content-security-policy']);
      assert.match(csp, /default-src 'self'/, uri);
      assert.match(csp, /frame-ancestors 'none'/, uri);
      assert.match(csp, /object-src 'none'/, uri);
    }
  });
});

describe('methods', () => {
  test('an unsupported method on a known URI is 405 with Allow', async () => {
    for (const [method, uri, allow] of [
      ['DELETE', '/redfish/v1/', 'GET, HEAD'],
      ['POST', '/redfish/v1/', 'GET, HEAD'],
      ['PATCH', '/redfish/v1/', 'GET, HEAD'],
      ['PUT', '/redfish/v1/Managers/bmc', 'GET, HEAD'],
      ['DELETE', '/redfish/v1/AccountService/Roles/Operator', 'GET, HEAD'],
      ['POST', '/redfish/v1/AccountService/Accounts/admin', 'GET, HEAD, PATCH, DELETE'],
    ] as const) {
      const response = await server.request(method, uri, method === 'DELETE' ? {} : { body: {} });
      assert.equal(response.status, 405, `${method} ${uri}`);
      assert.equal(response.headers.allow, allow, `${method} ${uri}`);
      assert.equal(response.json.error.code, 'Base.1.22.1.OperationNotAllowed');
    }
  });

  test("an unknown HTTP method is 501 (not the parser's 400)", async () => {
    const status = await new Promise<number | undefined>((resolve, reject) => {
      const request = https.request(
        new URL('/redfish/v1/', server.url),
        { method: 'FAKEMETHOD', ca: server.ca },
        (res) => {
          res.resume();
          resolve(res.statusCode);
        },
      );
      request.on('error', reject);
      request.end();
    });
    assert.equal(status, 501);
  });

  test('an unknown URI is 404 ResourceNotFound once authenticated, 401 before', async () => {
    const known = await server.request('GET', '/redfish/v1/Chassis/nothing');
    assert.equal(known.status, 404);
    assert.equal(known.json.error['@Message.ExtendedInfo'][0].MessageId, 'Base.1.22.1.ResourceNotFound');
    const anonymous = await server.request('GET', '/redfish/v1/Chassis/nothing', { auth: noAuth });
    assert.equal(anonymous.status, 401);
  });
});

describe('query parameters', () => {
  test('an unsupported $ parameter is 501 QueryParameterUnsupported naming it', async () => {
    const response = await server.request('GET', '/redfish/v1/?$rpvunknown');
    assert.equal(response.status, 501);
    assert.equal(response.json.error.code, 'Base.1.22.1.QueryParameterUnsupported');
    assert.deepEqual(response.json.error['@Message.ExtendedInfo'][0].MessageArgs, ['$rpvunknown']);
    assert.equal((await server.request('GET', '/redfish/v1/Managers?$expand=.')).status, 501);
    assert.equal((await server.request('GET', '/redfish/v1/Managers?only')).status, 501);
  });

  test('an unknown parameter without $ is ignored', async () => {
    assert.equal((await server.request('GET', '/redfish/v1/?rpvunknown')).status, 200);
  });
});

describe('request bodies', () => {
  const accounts = '/redfish/v1/AccountService/Accounts';

  test('a body that is not JSON is 415', async () => {
    const response = await server.request('POST', accounts, {
      rawBody: 'UserName=x',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    assert.equal(response.status, 415);
    const text = await server.request('POST', accounts, {
      rawBody: 'x',
      headers: { 'Content-Type': 'text/plain' },
    });
    assert.equal(text.status, 415);
  });

  test('malformed JSON is 400 MalformedJSON', async () => {
    const response = await server.request('POST', accounts, {
      rawBody: '{"UserName":',
      headers: { 'Content-Type': 'application/json' },
    });
    assert.equal(response.status, 400);
    assert.equal(response.json.error.code, 'Base.1.22.1.MalformedJSON');
  });

  test('a JSON body that is not an object is 400', async () => {
    const response = await server.request('PATCH', '/redfish/v1/SessionService', { body: [1, 2] });
    assert.equal(response.status, 400);
  });

  test('a body over the size limit is 413 PayloadTooLarge', async () => {
    const response = await server.request('POST', accounts, {
      rawBody: JSON.stringify({ UserName: 'x'.repeat(100_000) }),
      headers: { 'Content-Type': 'application/json' },
    });
    assert.equal(response.status, 413);
    assert.equal(response.json.error.code, 'Base.1.22.1.PayloadTooLarge');
  });

  test('a PATCH naming an unknown property is 400 PropertyUnknown naming it', async () => {
    const response = await server.request('PATCH', '/redfish/v1/SessionService', { body: { BogusProp: 1 } });
    assert.equal(response.status, 400);
    const [message] = response.json.error['@Message.ExtendedInfo'];
    assert.equal(message.MessageId, 'Base.1.22.1.PropertyUnknown');
    assert.deepEqual(message.MessageArgs, ['BogusProp']);
    assert.deepEqual(message.RelatedProperties, ['#/BogusProp']);
  });

  test('a PATCH of a read-only property is 400 PropertyNotWritable; of only annotations, 400 NoOperation', async () => {
    const readOnly = await server.request('PATCH', '/redfish/v1/SessionService', {
      body: { Id: 'other', SessionTimeout: 600 },
    });
    assert.equal(readOnly.status, 400);
    assert.equal(readOnly.json.error.code, 'Base.1.22.1.PropertyNotWritable');
    assert.equal((await server.request('GET', '/redfish/v1/SessionService')).json.SessionTimeout, 1800);
    const nothing = await server.request('PATCH', '/redfish/v1/SessionService', {
      body: { '@odata.id': '/redfish/v1/SessionService' },
    });
    assert.equal(nothing.status, 400);
    assert.equal(nothing.json.error.code, 'Base.1.22.1.NoOperation');
  });

  test('a value of the wrong type is 400 PropertyValueTypeError', async () => {
    const response = await server.request('PATCH', '/redfish/v1/SessionService', {
      body: { SessionTimeout: '600' },
    });
    assert.equal(response.status, 400);
    assert.equal(response.json.error.code, 'Base.1.22.1.PropertyValueTypeError');
    assert.deepEqual(response.json.error['@Message.ExtendedInfo'][0].MessageArgs, ['600', 'SessionTimeout']);
  });
});

describe('OpenAPI', () => {
  test('the OpenAPI document is served as YAML at /redfish/v1/openapi.yaml', async () => {
    const response = await server.request('GET', '/redfish/v1/openapi.yaml', {
      headers: { Accept: 'application/yaml' },
    });
    assert.equal(response.status, 200);
    assert.match(String(response.headers['content-type']), /^application\/yaml/);
    assert.match(response.text, /\/redfish\/v1\/SessionService\/Sessions:/);
  });
});
