// listen calls onEvent with every event of the stream at url (for example
// "https://dispatcher.example/events"), for as long as the page lives.
//
// EventSource reconnects by itself when the server ends the stream
// (shutdown, MAX_STREAM_DURATION) or the network fails: readyState is then
// CONNECTING. It gives up for good on an HTTP error, such as the 503 answered
// over capacity or while the service restarts: readyState is CLOSED, and
// only a new EventSource tries again. Events published while it is not
// connected are not replayed.
export function listen(url, onEvent) {
  const source = new EventSource(url);
  source.onmessage = (e) => onEvent(JSON.parse(e.data));
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(() => listen(url, onEvent), 5000 + Math.random() * 5000);
    }
  };
}
