/**
 * Reading the small files walbridge is configured with (the config file, the key file): never a
 * FIFO or a device (opened without blocking, then checked to be a regular file), at most
 * MAX_BYTES, and for at most READ_LIMIT_MS — a hung network mount must not
 * hang a call past the SIGTERM of a server shutdown. A failure is an Error whose message says
 * what is wrong with the file, never what is in it.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';

const MAX_BYTES = 1024 * 1024;
const READ_LIMIT_MS = 10_000;
const FLAGS = constants.O_RDONLY | constants.O_NONBLOCK;

function problem(isFile: boolean, size: number): string | undefined {
  if (!isFile) return 'it is not a regular file (a FIFO, a device or a directory?)';
  if (size > MAX_BYTES) return `it is larger than ${MAX_BYTES} bytes`;
  return undefined;
}

/**
 * Reads in flight, by path: a read abandoned at READ_LIMIT_MS still holds a thread of the pool,
 * so a hung file is never asked again while one such read waits (the pool would run dry).
 */
const inFlight = new Map<string, Promise<string>>();

export async function readSmallFile(file: string): Promise<string> {
  let reading = inFlight.get(file);
  if (!reading) {
    reading = readNow(file);
    inFlight.set(file, reading);
    const done = () => inFlight.delete(file);
    reading.then(done, done);
  }
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${READ_LIMIT_MS / 1000} s (a hung network mount?)`)), READ_LIMIT_MS);
    timer.unref();
  });
  try {
    return await Promise.race([reading, timeout]);
  } catch (err) {
    throw new Error(describe(err));
  } finally {
    clearTimeout(timer);
  }
}

async function readNow(file: string): Promise<string> {
  const fh = await open(file, FLAGS);
  try {
    const st = await fh.stat();
    const wrong = problem(st.isFile(), st.size);
    if (wrong) throw new Error(wrong);
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

/** An errno error as its code and words, without the path repeated. */
function describe(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ? `${e.code} (${e.message.replace(/^[A-Z]+: /, '').replace(/, \w+ '.*'$/, '')})` : e.message;
}
