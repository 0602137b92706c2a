// A stand-in for Lambda's managed Node.js runtime, for local tests: polls
// the Runtime API in AWS_LAMBDA_RUNTIME_API (host:port, as Lambda sets it)
// and calls the module's `handler(event, context)` for each event.
//
//     node ../runtime.mjs orders.mjs     (run in the handler's folder)
import { pathToFileURL } from "node:url";
import { resolve } from "node:path";

const { handler } = await import(pathToFileURL(resolve(process.argv[2])).href);
const api = process.env.AWS_LAMBDA_RUNTIME_API;
const base = `${api.startsWith("http") ? api : `http://${api}`}/2018-06-01/runtime`;

for (;;) {
  const next = await fetch(`${base}/invocation/next`);
  if (!next.ok) {
    // As the managed runtime does: a Runtime API that fails ends the process.
    throw new Error(`the Runtime API answered ${next.status}: ${await next.text()}`);
  }
  const requestId = next.headers.get("lambda-runtime-aws-request-id");
  const rawContext = next.headers.get("lambda-runtime-client-context");
  const context = {
    awsRequestId: requestId,
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME ?? "",
    clientContext: rawContext ? JSON.parse(rawContext) : undefined, // JSON from the Runtime API
  };
  const event = JSON.parse((await next.text()) || "null");
  let outcome = "response";
  let result;
  try {
    result = await handler(event, context);
  } catch (e) {
    console.error(e);
    outcome = "error";
    result = { errorMessage: String(e?.message ?? e), errorType: e?.name ?? "Error" };
  }
  await fetch(`${base}/invocation/${requestId}/${outcome}`, {
    method: "POST",
    body: JSON.stringify(result ?? null),
  }).then((r) => r.text());
}
