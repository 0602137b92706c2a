// orders: a Node.js function that calls `payments` through the Switchyard
// mesh extension. Nothing in it knows about Switchyard but the endpoint.
import { InvokeCommand, LambdaClient } from "@aws-sdk/client-lambda";

// The one-line change: the Lambda client talks to the mesh extension.
const lambda = new LambdaClient({ endpoint: process.env.SWITCHYARD_URL ?? "http://localhost:9010" });

export const handler = async (event) => {
  const answer = await lambda.send(
    new InvokeCommand({ FunctionName: "payments", Payload: JSON.stringify({ amount: 5 }) }),
  );
  const payments = JSON.parse(new TextDecoder().decode(answer.Payload));
  return {
    statusCode: 200,
    headers: { "content-type": "application/json" },
    cookies: [], // cargo lambda watch 1.9.2's function URLs refuse a response without it
    body: JSON.stringify({
      function: "orders",
      path: event.rawPath,
      traffic: event.headers?.["x-switchyard-traffic"] ?? "production",
      payments,
      paymentsVersion: answer.ExecutedVersion,
    }),
  };
};
