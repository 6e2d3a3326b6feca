// Runs the README's listen() (listen.js, copied next to this file) with the
// npm eventsource package standing in for the browser's EventSource, and
// prints each event it hands over as one line of JSON.
import { EventSource } from "eventsource";

globalThis.EventSource = EventSource;
const { listen } = await import("./listen.js");
listen(process.argv[2], (event) => console.log(JSON.stringify(event)));
