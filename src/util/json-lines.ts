/**
 * One JSON value per line over a socket: how archive_command and restore_command calls talk to
 * walbridge's background processes. Light on purpose: it is loaded by every call.
 */
import type { Socket } from 'node:net';

/** Longest line accepted: requests and answers are small; anything longer is not ours. */
const LINE_LIMIT = 64 * 1024;

export function sendLine(socket: Socket, value: unknown): void {
  socket.write(`${JSON.stringify(value)}\n`);
}

/**
 * Calls `onValue` for each line's value, in order, until the peer closes (then `onEnd`). A line
 * that is not JSON or too long ends the connection.
 */
export function receiveLines(socket: Socket, onValue: (value: unknown) => void, onEnd: () => void): void {
  let pending = '';
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    onEnd();
  };
  socket.setEncoding('utf8'); // decodes characters split across chunks
  socket.on('data', (chunk: string) => {
    pending += chunk;
    for (let cut = pending.indexOf('\n'); cut >= 0 && !ended; cut = pending.indexOf('\n')) {
      const line = pending.slice(0, cut);
      pending = pending.slice(cut + 1);
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        socket.destroy();
        return end();
      }
      onValue(value);
    }
    if (pending.length > LINE_LIMIT) {
      socket.destroy();
      end();
    }
  });
  socket.once('close', end);
  socket.once('error', () => socket.destroy());
}
