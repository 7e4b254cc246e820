// A BullMQ-for-Node benchmark worker with worker_proc.py's protocol: build everything,
// print "ready", start on a "go" line, close on "stop" (or EOF), then print one JSON line
// {cpu_s, latencies, express}. bullmq comes from NODE_PATH (see workload.node_modules).
//
// Usage: node node_worker.cjs <redis-url> <prefix> <queue> <concurrency>
"use strict";
const { Worker } = require("bullmq");
const IORedis = require("ioredis");
const readline = require("node:readline");

const [redisUrl, prefix, queue, concurrencyArg] = process.argv.slice(2);
const latencies = [];
const connection = new IORedis(redisUrl, { maxRetriesPerRequest: null });
const worker = new Worker(
  queue,
  async (job) => {
    const submitted = job.data && job.data.submittedAt;
    if (typeof submitted === "number") latencies.push(Date.now() / 1000 - submitted);
    return null;
  },
  { connection, prefix, concurrency: Number(concurrencyArg), autorun: false },
);
worker.on("error", (err) => console.error(`node_worker: ${err.message}`));

let cpu0 = null;
let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  const used = process.cpuUsage(cpu0 ?? undefined);
  await worker.close();
  await connection.quit();
  const cpu_s = cpu0 ? (used.user + used.system) / 1e6 : 0;
  process.stdout.write(JSON.stringify({ cpu_s, latencies, express: [] }) + "\n");
  process.exit(0);
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (line.trim() === "go" && cpu0 === null) {
    cpu0 = process.cpuUsage();
    worker.run();
  } else if (line.trim() === "stop") {
    stop();
  }
});
lines.on("close", stop);
worker.waitUntilReady().then(() => process.stdout.write("ready\n"));
