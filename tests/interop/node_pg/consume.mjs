// Run a Node BullMQ worker on its PostgreSQL backend until it has completed <count> jobs.
//
// Usage: node consume.mjs <postgres-url> <schema> <queue> <count> [timeout-ms]
// Processes one job at a time (so the output order is the processing order), returns
// {"consumedBy": "node", "id": <job id>} as each job's result, and prints
// {"jobs": [{id, name, data, opts, priority, attemptsMade}, ...]} on stdout. Exits 3
// (printing what it saw) if the jobs do not arrive within the timeout (default 30000 ms).
import { Worker, createPostgresBackend } from "bullmq";

const [connectionString, schema, queue, countArg, timeoutArg] = process.argv.slice(2);
const count = Number.parseInt(countArg ?? "", 10);
const timeoutMs = Number.parseInt(timeoutArg ?? "30000", 10);
if (!connectionString || !schema || !queue || !(count > 0) || !(timeoutMs > 0)) {
  console.error("usage: node consume.mjs <postgres-url> <schema> <queue> <count> [timeout-ms]");
  process.exit(2);
}

const seen = [];
let completed = 0;
const worker = new Worker(
  queue,
  async (job) => {
    seen.push({
      id: job.id,
      name: job.name,
      data: job.data,
      opts: job.opts,
      priority: job.priority,
      attemptsMade: job.attemptsMade,
    });
    return { consumedBy: "node", id: job.id };
  },
  {
    connection: { connectionString, schema, migrate: false },
    concurrency: 1,
    autorun: false,
  },
  createPostgresBackend,
);

const finished = new Promise((resolve) => {
  worker.on("completed", () => {
    completed += 1;
    if (completed >= count) resolve(0);
  });
  setTimeout(() => resolve(3), timeoutMs).unref();
});
worker.on("error", (err) => console.error(`consume.mjs: worker error: ${err.message}`));
worker.on("failed", (job, err) => console.error(`consume.mjs: job ${job?.id} failed: ${err.message}`));

worker.run();
const code = await finished;
await worker.close();
process.stdout.write(`${JSON.stringify({ jobs: seen })}\n`);
if (code !== 0) console.error(`consume.mjs: completed ${completed} of ${count} jobs in time`);
process.exit(code);
