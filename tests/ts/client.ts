// Drives the API through openapi-fetch with the types openapi-typescript generated from the
// document (schema.d.ts, made beside this file by the test). Prints what it saw as JSON.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

declare const process: { argv: string[] };

type Entry = components["schemas"]["PageEntryDefault"];
type Problem = components["schemas"]["Problem"];
type Line = [number, string];
type PageQuery = NonNullable<
  paths["/api/v1/models/{model_id}/training-metrics/logs"]["get"]["parameters"]["query"]
>;

const [baseUrl, token] = process.argv.slice(2);
const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
const model = { model_id: "mdl-alpha" };

async function walk(direction: "forward" | "backward"): Promise<Line[]> {
  let seen: Line[] = [];
  let cursor: string | null = null;
  for (;;) {
    // With a cursor, no direction is sent: the cursor holds it.
    const query: PageQuery = cursor === null ? { run_id: "run-a2", limit: 3, direction } : { cursor, limit: 3 };
    const { data, error } = await client.GET("/api/v1/models/{model_id}/training-metrics/logs", {
      params: { path: model, query },
    });
    if (data === undefined) throw new Error(JSON.stringify(error));
    const lines = data.data.map((entry): Line => [(entry as Entry).offset, (entry as Entry).message]);
    seen = direction === "forward" ? [...seen, ...lines] : [...lines, ...seen];
    if (data.next_cursor === null) return seen;
    cursor = data.next_cursor;
  }
}

async function main(): Promise<void> {
  const download = "/api/v1/models/{model_id}/training-metrics/logs/download";
  const log = await client.GET(download, {
    params: { path: model, query: { run_id: "run-a2" } },
    parseAs: "arrayBuffer",
  });
  const head = await client.HEAD(download, { params: { path: model, query: { run_id: "run-a2" } } });
  const missing = await client.GET("/api/v1/models/{model_id}/training-metrics/logs", {
    params: { path: { model_id: "mdl-nope" } },
  });
  const problem: Problem | undefined = missing.error;
  console.log(
    JSON.stringify({
      download: {
        status: log.response.status,
        bytes: Array.from(new Uint8Array(log.data ?? new ArrayBuffer(0))),
      },
      head: {
        status: head.response.status,
        length: head.response.headers.get("Content-Length"),
      },
      forward: await walk("forward"),
      backward: await walk("backward"),
      problem: { status: missing.response.status, code: problem?.code },
    }),
  );
}

await main();
