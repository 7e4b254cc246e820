// Add jobs to BullMQ queues on its PostgreSQL backend, as a Node service of Settler does.
//
// Usage: node produce.mjs <postgres-url> <schema> '<json>'
//   <json> is a list of {"queue": "...", "name": "...", "data": {...}, "opts": {...}};
//   "name" defaults to the queue name, "data" and "opts" to {}.
// The schema must already be migrated (the Python side owns migrations in these tests).
// Prints the ids of the added jobs, in order, as one JSON list on stdout.
import { Queue, createPostgresBackend } from "bullmq";

function usage(message) {
  console.error(`produce.mjs: ${message}`);
  console.error("usage: node produce.mjs <postgres-url> <schema> '<json list of jobs>'");
  process.exit(2);
}

const [connectionString, schema, specJson] = process.argv.slice(2);
if (!connectionString || !schema || specJson === undefined) usage("missing arguments");

let specs;
try {
  specs = JSON.parse(specJson);
} catch (err) {
  usage(`jobs are not valid JSON: ${err.message}`);
}
if (!Array.isArray(specs)) usage("jobs must be a JSON list");

const connection = { connectionString, schema, migrate: false };
const queues = new Map();
try {
  const ids = [];
  for (const spec of specs) {
    if (typeof spec?.queue !== "string") usage("every job needs a queue name");
    if (!queues.has(spec.queue)) {
      queues.set(spec.queue, new Queue(spec.queue, { connection }, createPostgresBackend));
    }
    const job = await queues.get(spec.queue).add(
      spec.name ?? spec.queue,
      spec.data ?? {},
      spec.opts ?? {},
    );
    ids.push(job.id);
  }
  process.stdout.write(`${JSON.stringify(ids)}\n`);
} finally {
  await Promise.all([...queues.values()].map((queue) => queue.close()));
}
