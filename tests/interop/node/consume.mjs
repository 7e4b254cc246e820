// Run a Node BullMQ worker on one queue until it has completed <count> jobs.
//
// Usage: node consume.mjs <redis-url> <prefix> <queue> <count> [timeout-ms]
// Processes one job at a time (so the output order is the processing order), returns
// {"consumedBy": "node", "id": <job id>} as each job's result, and prints
// {"jobs": [{id, name, data, opts, priority, attemptsMade, attemptsStarted}, ...]} on
// stdout. Exits 3 (printing what it saw) if the jobs do not arrive within the timeout
// (default 30000 ms).
import { Worker } from "bullmq";
import IORedis from "ioredis";

const [redisUrl, prefix, queue, countArg, timeoutArg] = process.argv.slice(2);
const count = Number.parseInt(countArg ?? "", 10);
const timeoutMs = Number.parseInt(timeoutArg ?? "30000", 10);
if (!redisUrl || !prefix || !queue || !(count > 0) || !(timeoutMs > 0)) {
  console.error("usage: node consume.mjs <redis-url> <prefix> <queue> <count> [timeout-ms]");
  process.exit(2);
}

const seen = [];
let completed = 0;
const connection = new IORedis(redisUrl, { maxRetriesPerRequest: null });
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
      attemptsStarted: job.attemptsStarted,
    });
    return { consumedBy: "node", id: job.id };
  },
  { connection, prefix, concurrency: 1, autorun: false },
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
await connection.quit();
process.stdout.write(`${JSON.stringify({ jobs: seen })}\n`);
if (code !== 0) console.error(`consume.mjs: completed ${completed} of ${count} jobs in time`);
process.exit(code);
