// Runs the README's listen() (../listen.js) in Node.js, with the npm
// eventsource package standing in for the browser's EventSource, and
// prints each event it hands over as one line of JSON:
//
//   npm ci --prefix examples/consumer/node
//   node examples/consumer/node/run.js http://localhost:3569/events
//
// listen.js is browser code outside this package, which Node.js 20 would
// read as CommonJS: it is imported from its source as an ES module.
import { readFileSync } from "node:fs";
import { EventSource } from "eventsource";

globalThis.EventSource = EventSource;
const source = readFileSync(new URL("../listen.js", import.meta.url), "utf8");
const { listen } = await import("data:text/javascript," + encodeURIComponent(source));
listen(process.argv[2] ?? "http://localhost:3569/events", (event) => console.log(JSON.stringify(event)));
